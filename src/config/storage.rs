//! Object storage: any S3-compatible server (Garage locally, AWS S3 in the cloud).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `S3_ENDPOINT` | AWS S3 itself | `http://` or `https://` base URL of the S3-compatible server |
//! | `S3_REGION` | `us-east-1` | The region requests are signed for |
//! | `S3_BUCKET` | required | The bucket holding every file and avatar |
//! | `S3_ACCESS_KEY_ID` | required | The id of the key the instances sign with |
//! | `S3_SECRET_ACCESS_KEY` | required | That key's secret |
//! | `S3_FORCE_PATH_STYLE` | `true` | Path-style URLs (`endpoint/bucket/key`), as Garage and MinIO expect; `false` for virtual hosts |
//! | `S3_TIMEOUT_MS` | `5000` | Bound on connecting and on each attempt of an S3 call |
//! | `S3_PUBLIC_ENDPOINT` | `S3_ENDPOINT` | The endpoint written into presigned URLs, for clients that reach storage elsewhere |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Secret, Source, Var, check_scheme};

pub const VARS: &[Var] = &[
    Var {
        name: "S3_ENDPOINT",
        default: Fallback::Unset("AWS S3 itself"),
        about: "`http://` or `https://` base URL of the S3-compatible server",
    },
    Var {
        name: "S3_REGION",
        default: Fallback::Value("us-east-1"),
        about: "The region requests are signed for",
    },
    Var {
        name: "S3_BUCKET",
        default: Fallback::Required,
        about: "The bucket holding every file and avatar",
    },
    Var {
        name: "S3_ACCESS_KEY_ID",
        default: Fallback::Required,
        about: "The id of the key the instances sign with",
    },
    Var {
        name: "S3_SECRET_ACCESS_KEY",
        default: Fallback::Required,
        about: "That key's secret",
    },
    Var {
        name: "S3_FORCE_PATH_STYLE",
        default: Fallback::Value("true"),
        about: "Path-style URLs (`endpoint/bucket/key`), as Garage and MinIO expect; `false` for virtual hosts",
    },
    Var {
        name: "S3_TIMEOUT_MS",
        default: Fallback::Value("5000"),
        about: "Bound on connecting and on each attempt of an S3 call",
    },
    Var {
        name: "S3_PUBLIC_ENDPOINT",
        default: Fallback::Derived("S3_ENDPOINT"),
        about: "The endpoint written into presigned URLs, for clients that reach storage elsewhere",
    },
];

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Path-style addressing (`endpoint/bucket/key`): what Garage and MinIO expect.
    pub force_path_style: bool,
    pub timeout: Duration,
    /// The endpoint written into presigned URLs: clients may not reach the internal one
    /// (a compose service name, a private address).
    pub public_endpoint: Option<String>,
}

impl StorageConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        let endpoint = match r.raw("S3_ENDPOINT") {
            Some(e) => {
                check_scheme("S3_ENDPOINT", &e, &["http", "https"])?;
                Some(e)
            }
            None => None,
        };
        Ok(Self {
            endpoint,
            region: r.text("S3_REGION"),
            bucket: r.required("S3_BUCKET")?,
            access_key_id: r.required("S3_ACCESS_KEY_ID")?,
            secret_access_key: Secret::new(r.required("S3_SECRET_ACCESS_KEY")?),
            force_path_style: r.parse("S3_FORCE_PATH_STYLE")?,
            timeout: r.duration("S3_TIMEOUT_MS", Duration::from_millis)?,
            // `None` rather than a copy of `endpoint`: storage then presigns with its one client.
            public_endpoint: match r.raw("S3_PUBLIC_ENDPOINT") {
                Some(e) => {
                    check_scheme("S3_PUBLIC_ENDPOINT", &e, &["http", "https"])?;
                    Some(e)
                }
                None => None,
            },
        })
    }
}
