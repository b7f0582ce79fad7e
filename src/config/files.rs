//! Uploads: how large, which types, how long a presigned URL lives.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `UPLOAD_MAX_BYTES` | `262144000` | Largest file accepted, streamed or direct (250 MiB) |
//! | `UPLOAD_PART_BYTES` | `8388608` | Bytes buffered per multipart part: the memory one streamed upload holds (at least 5 MiB) |
//! | `UPLOAD_ALLOWED_TYPES` | `image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain` | Types accepted, as recognised from a file's leading bytes |
//! | `UPLOAD_TIMEOUT_SECS` | `600` | The whole request of an upload (a file or an avatar) may take this long |
//! | `UPLOAD_URL_TTL_SECS` | `900` | Lifetime of the presigned PUT of a direct upload |
//! | `DOWNLOAD_URL_TTL_SECS` | `300` | Lifetime of the presigned GET behind `/content` |
//! | `AVATAR_MAX_BYTES` | `5242880` | Largest avatar image (5 MiB) |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "UPLOAD_MAX_BYTES",
        default: Fallback::Value("262144000"),
        about: "Largest file accepted, streamed or direct (250 MiB)",
    },
    Var {
        name: "UPLOAD_PART_BYTES",
        default: Fallback::Value("8388608"),
        about: "Bytes buffered per multipart part: the memory one streamed upload holds (at least 5 MiB)",
    },
    Var {
        name: "UPLOAD_ALLOWED_TYPES",
        default: Fallback::Value(
            "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain",
        ),
        about: "Types accepted, as recognised from a file's leading bytes",
    },
    Var {
        name: "UPLOAD_TIMEOUT_SECS",
        default: Fallback::Value("600"),
        about: "The whole request of an upload (a file or an avatar) may take this long",
    },
    Var {
        name: "UPLOAD_URL_TTL_SECS",
        default: Fallback::Value("900"),
        about: "Lifetime of the presigned PUT of a direct upload",
    },
    Var {
        name: "DOWNLOAD_URL_TTL_SECS",
        default: Fallback::Value("300"),
        about: "Lifetime of the presigned GET behind `/content`",
    },
    Var {
        name: "AVATAR_MAX_BYTES",
        default: Fallback::Value("5242880"),
        about: "Largest avatar image (5 MiB)",
    },
];

/// Uploads: how large, which types, how long a presigned URL lives.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub max_bytes: u64,
    /// Bytes buffered per multipart part: the memory one streamed upload holds at once.
    pub part_bytes: usize,
    /// Content types accepted, as recognised from a file's leading bytes.
    pub allowed_types: Vec<String>,
    pub upload_timeout: Duration,
    pub upload_url_ttl: Duration,
    pub download_url_ttl: Duration,
    pub avatar_max_bytes: u64,
}

/// S3 refuses parts under 5 MiB, except the last.
const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

impl FilesConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        let part_bytes: usize = r.parse("UPLOAD_PART_BYTES")?;
        if part_bytes < MIN_PART_BYTES {
            return Err(ConfigError {
                var: "UPLOAD_PART_BYTES",
                problem: format!("must be at least {MIN_PART_BYTES} (S3's minimum part size)"),
            });
        }
        let allowed_types = r
            .text("UPLOAD_ALLOWED_TYPES")
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>();
        if let Some(unknown) = allowed_types
            .iter()
            .find(|t| !crate::media_types::RECOGNISED.contains(&t.as_str()))
        {
            return Err(ConfigError {
                var: "UPLOAD_ALLOWED_TYPES",
                problem: format!(
                    "{unknown:?} cannot be recognised from a file's bytes; choose from {}",
                    crate::media_types::RECOGNISED.join(", ")
                ),
            });
        }
        let max_bytes = r.parse::<u64>("UPLOAD_MAX_BYTES")?;
        let avatar_max_bytes = r.parse::<u64>("AVATAR_MAX_BYTES")?;
        for (var, value) in [
            ("UPLOAD_MAX_BYTES", max_bytes),
            ("AVATAR_MAX_BYTES", avatar_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError {
                    var,
                    problem: "must be greater than zero".into(),
                });
            }
        }
        Ok(Self {
            max_bytes,
            part_bytes,
            allowed_types,
            upload_timeout: r.duration("UPLOAD_TIMEOUT_SECS", Duration::from_secs)?,
            upload_url_ttl: r.duration("UPLOAD_URL_TTL_SECS", Duration::from_secs)?,
            download_url_ttl: r.duration("DOWNLOAD_URL_TTL_SECS", Duration::from_secs)?,
            avatar_max_bytes,
        })
    }
}
