//! Capacity (`scaleout serve`): how much expensive work one instance takes on at once. Past a
//! bound the answer is a fast 503 with `Retry-After`, so a burst costs the instance a bounded
//! amount of memory and CPU and its other requests (`/health`, reads) keep being answered.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `PASSWORD_HASHES_IN_FLIGHT` | the number of CPU cores | Argon2 hashes and verifications running at once (about 19 MiB each); more wait, then 503 |
//! | `PASSWORD_HASH_WAIT_MS` | `1500` | How long a request waits for a hashing slot before 503 with `Retry-After` |
//! | `UPLOADS_IN_FLIGHT` | `16` | Streamed uploads (files and avatars) received at once, each holding up to `UPLOAD_PART_BYTES`; past it 503 with `Retry-After` |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "PASSWORD_HASHES_IN_FLIGHT",
        default: Fallback::Unset("the number of CPU cores"),
        about: "Argon2 hashes and verifications running at once (about 19 MiB each); more wait, then 503",
    },
    Var {
        name: "PASSWORD_HASH_WAIT_MS",
        default: Fallback::Value("1500"),
        about: "How long a request waits for a hashing slot before 503 with `Retry-After`",
    },
    Var {
        name: "UPLOADS_IN_FLIGHT",
        default: Fallback::Value("16"),
        about: "Streamed uploads (files and avatars) received at once, each holding up to `UPLOAD_PART_BYTES`; past it 503 with `Retry-After`",
    },
];

/// Bounds on the expensive work one instance does at once.
#[derive(Debug, Clone)]
pub struct CapacityConfig {
    /// Password hashes and verifications running at once.
    pub password_hashes: usize,
    /// How long a request waits for a hashing slot.
    pub password_hash_wait: Duration,
    /// Streamed uploads received at once.
    pub uploads: usize,
}

impl CapacityConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        // Argon2 is CPU-bound: more hashes than cores only queue inside the blocking pool,
        // each holding its 19 MiB while it waits.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cores = u32::try_from(cores).unwrap_or(u32::MAX);
        Ok(Self {
            password_hashes: r.positive_or("PASSWORD_HASHES_IN_FLIGHT", cores)? as usize,
            password_hash_wait: r.duration("PASSWORD_HASH_WAIT_MS", Duration::from_millis)?,
            uploads: r.positive("UPLOADS_IN_FLIGHT")? as usize,
        })
    }
}
