//! What managed services need of the binary, against real servers: Redis over TLS with a
//! private CA in both clients (sessions and the application's), S3 credentials from the AWS
//! default chain when no static key is configured, traces over https to a collector, and
//! Postgres' `sslmode=verify-full` with a CA bundle. The TLS servers are throwaway ones, with a
//! CA made by openssl for each test, so these run beside the others.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TestUser, client, env, eventually, signed_up, spawn_app_with};

/// A port nothing listens on right now (the OS's choice, released at once).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("its address")
        .port()
}

fn run(dir: &Path, program: &str, args: &[&str]) {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A throwaway CA and a server certificate it signed for 127.0.0.1 and localhost.
fn certificates(dir: &Path) {
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=scaleout test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    run(
        dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .expect("written");
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// A `redis-server` that speaks TLS only, on a port of its own; stopped when dropped.
struct TlsRedis {
    port: u16,
    dir: PathBuf,
    _server: tokio::process::Child,
}

impl TlsRedis {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("scaleout-tls-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a folder");
        certificates(&dir);
        let port = free_port();
        let server = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        eventually("the TLS Redis listens", Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self {
            port,
            dir,
            _server: server,
        }
    }

    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.port)
    }

    fn ca(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn both_redis_clients_work_over_tls_with_a_private_ca_and_refuse_an_unknown_one() {
    let redis = TlsRedis::start().await;
    let url = redis.url();
    let ca = redis.ca();
    let app = spawn_app_with(&[("REDIS_URL", &url), ("REDIS_CA_FILE", &ca)]).await;
    let user = TestUser::new();

    // Signup and login keep a session (fred's client); the login throttle's counters and the
    // write's read-your-writes position go through the application's client.
    let mut api = signed_up(&app.url(""), &user).await;
    let login = api.login(&user).await;
    let me = api.me().await;
    let ready: serde_json::Value = app.get("/ready").await.json().await.expect("JSON");
    // Both clients' state is in the TLS server, not in the topology's Redis.
    let mut conn = app.state.redis.conn().await.expect("connects over TLS");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    // Without the CA, the same server is refused: the certificate is checked.
    let unverified = spawn_app_with(&[("REDIS_URL", &url)]).await;
    let unverified_ready = unverified.get("/ready").await;
    let unverified_body: serde_json::Value = unverified_ready.json().await.expect("JSON");

    assert_eq!(login.status(), StatusCode::OK, "login");
    assert_eq!(me.status(), StatusCode::OK, "GET /me with the session");
    assert!(
        !ready["down"]
            .as_array()
            .expect("a list")
            .iter()
            .any(|d| d == "redis"),
        "{ready}"
    );
    assert!(
        keys.iter().any(|k| k.starts_with("sessions:user:")),
        "the session index is in the TLS server: {keys:?}"
    );
    assert!(
        keys.len() >= 3,
        "sessions, counters and positions are there: {keys:?}"
    );
    assert_eq!(
        unverified_body["down"],
        serde_json::json!(["redis"]),
        "an unknown CA is refused"
    );
}

#[tokio::test]
async fn without_static_keys_s3_credentials_come_from_the_aws_default_chain() {
    let http = free_port();
    let metrics = free_port();
    // A real process: the default chain reads the process environment, which a test cannot
    // change for an in-process app without changing it for every test.
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_scaleout"))
        .arg("serve")
        .env_remove("S3_ACCESS_KEY_ID")
        .env_remove("S3_SECRET_ACCESS_KEY")
        .env("AWS_ACCESS_KEY_ID", env("S3_ACCESS_KEY_ID"))
        .env("AWS_SECRET_ACCESS_KEY", env("S3_SECRET_ACCESS_KEY"))
        // No profile files or instance metadata to find first on a developer's machine.
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SCALEOUT_INSTANCE_ID", "test-default-chain")
        .env("SCALEOUT_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("SCALEOUT_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("SHUTDOWN_DRAIN_SECS", "0")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("scaleout serve starts");
    let base = format!("http://127.0.0.1:{http}");
    // /ready asks storage for the bucket, signed with what the chain found.
    let ready: serde_json::Value =
        eventually("the instance is ready", Duration::from_secs(30), || {
            let url = format!("{base}/ready");
            async move {
                let response = client().get(url).send().await.ok()?;
                let body: serde_json::Value = response.json().await.ok()?;
                (body["status"] == "ready").then_some(body)
            }
        })
        .await;
    let api = signed_up(&base, &TestUser::new()).await;

    let uploaded = api
        .upload(
            b"signed by the default chain\n".to_vec(),
            "chain.txt",
            "text/plain",
        )
        .await;
    let status = uploaded.status();
    let file: serde_json::Value = uploaded.json().await.expect("JSON");
    let id = file["id"].as_str().expect("an id");
    let content = api.download(id).await;

    assert_eq!(
        ready["down"],
        serde_json::json!([]),
        "storage answered: {ready}"
    );
    assert_eq!(status, StatusCode::CREATED, "{file}");
    assert_eq!(content, b"signed by the default chain\n");
}

/// An OTLP/HTTP receiver behind TLS (the server certificate of `dir`), on a thread of its own:
/// a minimal HTTP/1.1 server over rustls that answers every request `{}` and keeps the bodies.
fn start_tls_receiver(dir: &Path) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{BufRead as _, Read as _, Write as _};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("the certificate")
        .collect::<Result<_, _>>()
        .expect("PEM");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("the key");
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("a server configuration");
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let config = config.clone();
            let store = store.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let tls = rustls::StreamOwned::new(conn, stream);
                let mut reader = std::io::BufReader::new(tls);
                // One request after another on the connection (the client keeps it alive).
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    let mut first = true;
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if first && !line.starts_with("POST /v1/traces ") {
                            return;
                        }
                        first = false;
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    store
                        .lock()
                        .expect("not poisoned")
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    let tls = reader.get_mut();
                    if tls
                        .write_all(answer.as_bytes())
                        .and_then(|()| tls.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

#[tokio::test]
async fn traces_are_exported_over_https_to_a_collector_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("scaleout-otlp-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a folder");
    certificates(&dir);
    let (collector, received) = start_tls_receiver(&dir);
    let http = free_port();
    let metrics = free_port();
    let _serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_scaleout"))
        .arg("serve")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://127.0.0.1:{collector}"),
        )
        // The exporter trusts the system's roots; SSL_CERT_FILE adds the private CA.
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env("SCALEOUT_INSTANCE_ID", "test-otlp-https")
        .env("SCALEOUT_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .env("SCALEOUT_METRICS_ADDR", format!("127.0.0.1:{metrics}"))
        .env("SHUTDOWN_DRAIN_SECS", "0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("scaleout serve starts");
    let base = format!("http://127.0.0.1:{http}");

    // Requests until a batch of spans arrives (the batch processor exports every few seconds).
    let body = eventually("spans arrive over https", Duration::from_secs(60), || {
        let url = format!("{base}/api/v1");
        let received = received.clone();
        async move {
            let _ = client().get(url).send().await;
            received.lock().expect("not poisoned").first().cloned()
        }
    })
    .await;
    let _ = std::fs::remove_dir_all(&dir);

    assert!(
        body.contains("resourceSpans") && body.contains("test-otlp-https"),
        "{body}"
    );
}

/// Postgres' binaries, where Debian puts them (as deploy/local/stack finds them).
fn pg_bin(program: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres is installed")
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    versions.sort();
    versions.pop().expect("a version").join(program)
}

/// A throwaway Postgres with TLS on (the server certificate of `dir`), listening on 127.0.0.1
/// and 127.0.0.2, run as the `postgres` user; stopped when dropped.
struct TlsPostgres {
    port: u16,
    dir: PathBuf,
    _server: tokio::process::Child,
}

impl TlsPostgres {
    async fn start(dir: &Path) -> Self {
        let data = dir.join("data");
        run(
            dir,
            "chown",
            &["-R", "postgres", &dir.display().to_string()],
        );
        run(dir, "chmod", &["600", "server.key"]);
        run(
            dir,
            "runuser",
            &[
                "-u",
                "postgres",
                "--",
                &pg_bin("initdb").display().to_string(),
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        let port = free_port();
        let server = tokio::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", &format!("port={port}")])
            .args(["-c", "listen_addresses=127.0.0.1,127.0.0.2"])
            .args(["-c", &format!("unix_socket_directories={}", dir.display())])
            .args([
                "-c",
                "ssl=on",
                "-c",
                "ssl_cert_file=../server.pem",
                "-c",
                "ssl_key_file=../server.key",
            ])
            .args(["-c", "fsync=off"])
            .current_dir(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("postgres starts");
        eventually(
            "the TLS Postgres listens",
            Duration::from_secs(30),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
            },
        )
        .await;
        Self {
            port,
            dir: dir.to_owned(),
            _server: server,
        }
    }

    async fn connect(&self, host: &str, params: &str) -> Result<i32, sqlx::Error> {
        let url = format!("postgres://postgres@{host}:{}/postgres?{params}", self.port);
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        let mut conn = sqlx::ConnectOptions::connect(&options).await?;
        sqlx::query_scalar::<_, i32>("select 1")
            .fetch_one(&mut conn)
            .await
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_verify_full_accepts_the_right_ca_and_host_and_refuses_others() {
    scaleout::install_tls_provider();
    let root = std::env::temp_dir().join(format!("scaleout-pg-tls-{}", uuid::Uuid::new_v4()));
    let (ours, other) = (root.join("ours"), root.join("other"));
    for dir in [&ours, &other] {
        std::fs::create_dir_all(dir).expect("a folder");
        certificates(dir);
    }
    let ca = |dir: &Path| dir.join("ca.pem").display().to_string();
    let postgres = TlsPostgres::start(&ours).await;

    let right = |host: &'static str| {
        let params = format!("sslmode=verify-full&sslrootcert={}", ca(&ours));
        let postgres = &postgres;
        async move { postgres.connect(host, &params).await }
    };
    let by_ip = right("127.0.0.1").await;
    let by_name = right("localhost").await;
    let wrong_ca = postgres
        .connect(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={}", ca(&other)),
        )
        .await;
    // 127.0.0.2 is not in the certificate: verify-full refuses it, verify-ca does not check
    // names.
    let wrong_host = right("127.0.0.2").await;
    let ca_only = postgres
        .connect(
            "127.0.0.2",
            &format!("sslmode=verify-ca&sslrootcert={}", ca(&ours)),
        )
        .await;
    drop(postgres);
    let _ = std::fs::remove_dir_all(&root);

    assert_eq!(by_ip.expect("verify-full by address"), 1);
    assert_eq!(by_name.expect("verify-full by name"), 1);
    // sqlx reports a refused certificate as an I/O error carrying rustls' reason.
    let refused = |r: &Result<i32, sqlx::Error>, why: &str| matches!(r, Err(e) if format!("{e:?}").contains(why));
    assert!(
        refused(&wrong_ca, "InvalidCertificate(BadSignature)"),
        "another CA is refused: {wrong_ca:?}"
    );
    assert!(
        refused(&wrong_host, "InvalidCertificate(NotValidForName"),
        "a host the certificate does not name is refused: {wrong_host:?}"
    );
    assert_eq!(ca_only.expect("verify-ca does not check the name"), 1);
}
