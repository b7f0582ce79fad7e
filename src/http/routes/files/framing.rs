//! Bounds on a multipart body's framing, checked on the bytes as they stream in, before the
//! multipart parser (multer, under axum's `Multipart`) sees them.
//!
//! multer has no limit on the preamble before the first boundary or on a part's headers: it
//! buffers until it finds the boundary or the blank line, searching the whole buffer again on
//! every chunk. A body with no boundary at all would be held up to the route's body limit
//! (hundreds of MiB for uploads) and searched quadratically. This guard follows the same
//! framing (RFC 2046, as multer reads it) with a few bytes of state and refuses the body as
//! soon as the preamble, a part's headers, the number of parts or a part's size passes its
//! bound, so the parser never holds more than a bound plus one chunk.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::error::ApiError;

/// Bytes allowed before the first boundary. Clients send none or a line of text.
pub const PREAMBLE_BYTES: usize = 4 * 1024;
/// Bytes allowed for one part's headers (Content-Disposition with a long file name fits).
pub const HEADER_BYTES: usize = 8 * 1024;
/// Parts allowed in one body. The upload routes take one and refuse a second by its name, so
/// this is a backstop: the parser stops well before a flood of tiny parts.
pub const MAX_PARTS: usize = 4;
/// The longest boundary RFC 2046 allows.
const MAX_BOUNDARY: usize = 70;

/// What a body's framing may be; `part_bytes` is the route's own file limit.
#[derive(Debug, Clone, Copy)]
pub struct FramingLimits {
    pub part_bytes: u64,
}

/// Why the guard refused a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    #[error("no multipart boundary within the first {} bytes", PREAMBLE_BYTES)]
    Preamble,
    #[error("a part's headers are longer than {} bytes", HEADER_BYTES)]
    Headers,
    #[error("more than {} parts", MAX_PARTS)]
    Parts,
    #[error("a part is larger than {0} bytes")]
    PartSize(u64),
    #[error("the multipart framing is broken after a boundary")]
    Broken,
    #[error("the multipart boundary is longer than {} characters", MAX_BOUNDARY)]
    Boundary,
}

impl From<FramingError> for ApiError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::PartSize(_) => ApiError::PayloadTooLarge,
            other => ApiError::BadRequest {
                kind: "malformed-multipart",
                detail: other.to_string(),
            },
        }
    }
}

/// Where the scanner is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Before the first `--boundary`.
    Preamble,
    /// Just after a `--boundary`: `--` closes the body, else padding and CRLF.
    AfterBoundary,
    /// One `-` seen after a boundary.
    Dash,
    /// Spaces or tabs after a boundary, before its CRLF.
    Padding,
    /// The CR of the boundary line's CRLF.
    Cr,
    /// A part's headers, up to the blank line.
    Headers,
    /// A part's content, up to `CRLF--boundary`.
    Data,
    /// After the closing boundary: the parser reads no further.
    Done,
}

/// The framing state machine, fed chunk by chunk.
#[derive(Debug)]
struct Scanner {
    limits: FramingLimits,
    /// `--boundary` (the first delimiter may start the body) and `\r\n--boundary`.
    first: Vec<u8>,
    delimiter: Vec<u8>,
    stage: Stage,
    /// Bytes seen in the current stage (preamble, headers or part).
    count: u64,
    parts: usize,
    /// The last bytes of the current stage, so a pattern split across chunks is found.
    tail: Vec<u8>,
}

impl Scanner {
    fn new(boundary: &str, limits: FramingLimits) -> Result<Self, FramingError> {
        if boundary.len() > MAX_BOUNDARY {
            return Err(FramingError::Boundary);
        }
        let first = [b"--", boundary.as_bytes()].concat();
        let delimiter = [b"\r\n", first.as_slice()].concat();
        Ok(Self {
            limits,
            first,
            delimiter,
            stage: Stage::Preamble,
            count: 0,
            parts: 0,
            tail: Vec::new(),
        })
    }

    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.count = 0;
        self.tail.clear();
    }

    fn feed(&mut self, mut chunk: &[u8]) -> Result<(), FramingError> {
        while !chunk.is_empty() {
            match self.stage {
                Stage::Done => return Ok(()),
                Stage::Preamble | Stage::Headers | Stage::Data => {
                    let (pattern, limit, error) = match self.stage {
                        Stage::Preamble => (
                            self.first.clone(),
                            PREAMBLE_BYTES as u64,
                            FramingError::Preamble,
                        ),
                        Stage::Headers => (
                            b"\r\n\r\n".to_vec(),
                            HEADER_BYTES as u64,
                            FramingError::Headers,
                        ),
                        _ => (
                            self.delimiter.clone(),
                            self.limits.part_bytes,
                            FramingError::PartSize(self.limits.part_bytes),
                        ),
                    };
                    match self.find(&pattern, chunk) {
                        Some(end) => {
                            // The pattern itself is framing, not the stage's content.
                            self.count += end as u64;
                            if self.count > limit + pattern.len() as u64 {
                                return Err(error);
                            }
                            let next = match self.stage {
                                Stage::Headers => Stage::Data,
                                _ => Stage::AfterBoundary,
                            };
                            self.enter(next);
                            chunk = &chunk[end..];
                        }
                        None => {
                            self.count += chunk.len() as u64;
                            if self.count > limit + pattern.len() as u64 {
                                return Err(error);
                            }
                            self.keep_tail(chunk, pattern.len() - 1);
                            return Ok(());
                        }
                    }
                }
                Stage::AfterBoundary | Stage::Dash | Stage::Padding | Stage::Cr => {
                    let byte = chunk[0];
                    chunk = &chunk[1..];
                    self.count += 1;
                    self.stage = match (self.stage, byte) {
                        (Stage::AfterBoundary, b'-') => Stage::Dash,
                        (Stage::Dash, b'-') => Stage::Done,
                        (Stage::AfterBoundary | Stage::Padding, b' ' | b'\t') => Stage::Padding,
                        (Stage::AfterBoundary | Stage::Padding, b'\r') => Stage::Cr,
                        (Stage::Cr, b'\n') => {
                            self.parts += 1;
                            if self.parts > MAX_PARTS {
                                return Err(FramingError::Parts);
                            }
                            self.enter(Stage::Headers);
                            continue;
                        }
                        _ => return Err(FramingError::Broken),
                    };
                    if self.count > HEADER_BYTES as u64 {
                        return Err(FramingError::Headers);
                    }
                }
            }
        }
        Ok(())
    }

    /// Where in `chunk` the first `pattern` of the current stage ends, counting one that
    /// began in earlier chunks (`tail`).
    fn find(&self, pattern: &[u8], chunk: &[u8]) -> Option<usize> {
        if !self.tail.is_empty() {
            let head = &chunk[..chunk.len().min(pattern.len() - 1)];
            let joined = [self.tail.as_slice(), head].concat();
            if let Some(at) = memchr::memmem::find(&joined, pattern)
                && at < self.tail.len()
            {
                return Some(at + pattern.len() - self.tail.len());
            }
        }
        memchr::memmem::find(chunk, pattern).map(|at| at + pattern.len())
    }

    fn keep_tail(&mut self, chunk: &[u8], keep: usize) {
        if chunk.len() >= keep {
            self.tail.clear();
            self.tail.extend_from_slice(&chunk[chunk.len() - keep..]);
        } else {
            self.tail.extend_from_slice(chunk);
            let excess = self.tail.len().saturating_sub(keep);
            self.tail.drain(..excess);
        }
    }
}

/// Where a guarded stream records why it stopped, for the handler to read after the parser
/// fails.
pub type Breach = Arc<Mutex<Option<FramingError>>>;

/// A body stream checked by the scanner. On a breach it records why (for the handler's
/// answer) and ends the stream with an error, which the parser reports as a broken body.
pub struct Guarded<S> {
    inner: S,
    scanner: Scanner,
    breach: Breach,
    failed: bool,
}

impl<S> Guarded<S> {
    /// The guarded stream and the slot where a breach is recorded.
    pub fn new(
        inner: S,
        boundary: &str,
        limits: FramingLimits,
    ) -> Result<(Self, Breach), FramingError> {
        let breach = Arc::new(Mutex::new(None));
        let guarded = Self {
            inner,
            scanner: Scanner::new(boundary, limits)?,
            breach: breach.clone(),
            failed: false,
        };
        Ok((guarded, breach))
    }
}

impl<S> std::fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("scanner", &self.scanner)
            .finish_non_exhaustive()
    }
}

impl<S> Stream for Guarded<S>
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Unpin,
{
    type Item = Result<Bytes, axum::BoxError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scanner.feed(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(e) => {
                    this.failed = true;
                    if let Ok(mut breach) = this.breach.lock() {
                        *breach = Some(e.clone());
                    }
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
            // The body's own errors (a limit's cut, a reset) pass through unchanged.
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FramingLimits = FramingLimits { part_bytes: 100 };

    fn body(parts: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (headers, data) in parts {
            body.extend_from_slice(format!("--XyZ\r\n{headers}\r\n\r\n{data}\r\n").as_bytes());
        }
        body.extend_from_slice(b"--XyZ--\r\n");
        body
    }

    /// Feeds `bytes` in chunks of `size`, returning the first breach.
    fn scan(bytes: &[u8], size: usize) -> Result<Stage, FramingError> {
        let mut scanner = Scanner::new("XyZ", LIMITS).expect("a short boundary");
        for chunk in bytes.chunks(size) {
            scanner.feed(chunk)?;
        }
        Ok(scanner.stage)
    }

    #[test]
    fn a_well_formed_body_passes_however_it_is_chunked() {
        let ok = body(&[(
            "Content-Disposition: form-data; name=\"file\"; filename=\"a.txt\"",
            "hello --XyZ inside a line is content, and so is \r\n--XY",
        )]);
        for size in [1, 2, 3, 5, 7, 64, ok.len()] {
            assert_eq!(scan(&ok, size), Ok(Stage::Done), "chunks of {size}");
        }
        let with_preamble = [b"This is a multi-part message.\r\n".as_slice(), &ok].concat();
        assert_eq!(scan(&with_preamble, 3), Ok(Stage::Done));
        let padded = b"--XyZ \t\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n--XyZ--";
        assert_eq!(scan(padded, 1), Ok(Stage::Done));
    }

    #[test]
    fn each_bound_is_enforced_at_any_chunking() {
        let no_boundary = vec![b'a'; PREAMBLE_BYTES * 3];
        let endless_headers = [b"--XyZ\r\n".as_slice(), &vec![b'h'; HEADER_BYTES * 2]].concat();
        let many = body(&[("A: b", "x"); MAX_PARTS + 1]);
        let big = body(&[("A: b", "x".repeat(101).as_str())]);
        let broken = b"--XyZ!\r\n".to_vec();
        for size in [1, 7, 4096, usize::MAX] {
            assert_eq!(scan(&no_boundary, size), Err(FramingError::Preamble));
            assert_eq!(scan(&endless_headers, size), Err(FramingError::Headers));
            assert_eq!(scan(&many, size), Err(FramingError::Parts));
            assert_eq!(scan(&big, size), Err(FramingError::PartSize(100)));
            assert_eq!(scan(&broken, size), Err(FramingError::Broken));
        }
        let full = "x".repeat(100);
        let at_limits = body(&[("A: b", full.as_str()); MAX_PARTS]);
        assert_eq!(scan(&at_limits, 13), Ok(Stage::Done));
        assert!(Scanner::new(&"b".repeat(71), LIMITS).is_err());
    }
}
