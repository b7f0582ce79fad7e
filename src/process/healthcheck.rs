//! `scaleout healthcheck`: the container image's HEALTHCHECK, so the image needs no curl.
//!
//! It asks the process in the same container for `/health` on its internal listener
//! (`SCALEOUT_METRICS_ADDR`; serve and worker both answer there) and exits 0 on a 200, 1 on
//! anything else: no answer within [`TIMEOUT`], a refused connection, or 503 while the process
//! drains. A plain HTTP/1.1 request over a blocking socket: no runtime, no client library, no
//! telemetry, so the probe costs a few milliseconds and cannot hang past its deadline.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The whole probe (connect, send, read the status line) fits in this.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// Where to connect for a listener bound to `addr`: a wildcard address (0.0.0.0, [::]) is
/// reached on the loopback of the same family.
pub fn target(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `GET /health` on `addr` within `timeout`: Ok when the answer's status is 200, else the
/// reason, for the one line the subcommand prints.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer from {addr} within {timeout:?}"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .and_then(|()| {
            // One write: `write!` would send the request in pieces, and a peer that answers
            // after the first piece and closes would reset the connection before the answer
            // is read.
            let request =
                format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes())
        })
        .map_err(|e| format!("cannot send to {addr}: {e}"))?;
    // Only the status line is needed; read until its end, at most 1 KiB.
    let mut head = Vec::with_capacity(128);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer from {addr}: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match line.split_whitespace().nth(1) {
        Some("200") if line.starts_with("HTTP/1.") => Ok(()),
        Some(status) => Err(format!("{addr} answered {status}")),
        None => Err(format!("{addr} answered no HTTP status")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::thread;

    use super::*;

    /// A listener that answers one request with `answer` (or nothing, when None).
    fn server(answer: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        thread::spawn(move || {
            if let Ok((mut socket, _)) = listener.accept() {
                // The whole request, as a server would read it: closing with part of it
                // unread would reset the connection under the answer.
                let mut request = Vec::new();
                let mut buf = [0u8; 512];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                match answer {
                    Some(answer) => {
                        let _ = socket.write_all(answer.as_bytes());
                    }
                    // Hold the connection open and silent past the probe's deadline.
                    None => thread::sleep(Duration::from_secs(3)),
                }
            }
        });
        addr
    }

    #[test]
    fn healthy_only_on_200() {
        let ok = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert_eq!(check(ok, TIMEOUT), Ok(()));
        let draining = server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        assert!(check(draining, TIMEOUT).is_err_and(|e| e.contains("503")));
        let garbage = server(Some("SSH-2.0-OpenSSH\r\n"));
        assert!(check(garbage, TIMEOUT).is_err());
    }

    #[test]
    fn a_silent_or_absent_process_fails_within_the_deadline() {
        let silent = server(None);
        let start = Instant::now();
        assert!(check(silent, Duration::from_millis(300)).is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
        // A port nothing listens on (bound, then released).
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("addr");
        assert!(check(closed, TIMEOUT).is_err());
    }

    #[test]
    fn wildcard_addresses_are_reached_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9180".parse().expect("addr");
        assert_eq!(target(v4), "127.0.0.1:9180".parse().expect("addr"));
        let v6: SocketAddr = "[::]:9180".parse().expect("addr");
        assert_eq!(target(v6), "[::1]:9180".parse().expect("addr"));
        let given: SocketAddr = "10.1.2.3:9180".parse().expect("addr");
        assert_eq!(target(given), given);
    }
}
