//! Object storage: any S3-compatible server (Garage locally, AWS S3 in the cloud).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `S3_ENDPOINT` | AWS S3 itself | `http://` or `https://` base URL of the S3-compatible server |
//! | `S3_REGION` | `us-east-1` | The region requests are signed for |
//! | `S3_BUCKET` | required | The bucket holding every file and avatar |
//! | `S3_ACCESS_KEY_ID` | the AWS default credential chain | The id of a static key the instances sign with (with `S3_SECRET_ACCESS_KEY`) |
//! | `S3_SECRET_ACCESS_KEY` | the AWS default credential chain | That key's secret (with `S3_ACCESS_KEY_ID`) |
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
        default: Fallback::Unset("the AWS default credential chain"),
        about: "The id of a static key the instances sign with (with `S3_SECRET_ACCESS_KEY`)",
    },
    Var {
        name: "S3_SECRET_ACCESS_KEY",
        default: Fallback::Unset("the AWS default credential chain"),
        about: "That key's secret (with `S3_ACCESS_KEY_ID`)",
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
    /// A static key (id, secret); `None`: the AWS default credential chain (`AWS_ACCESS_KEY_ID`
    /// and `AWS_SECRET_ACCESS_KEY`, a web identity token as EKS gives a service account, the
    /// profile files, the container or instance role), looked up on first use.
    pub static_key: Option<(String, Secret)>,
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
            static_key: match (r.raw("S3_ACCESS_KEY_ID"), r.raw("S3_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => Some((id, Secret::new(secret))),
                (None, None) => None,
                // Half a key would silently fall back to other credentials: refuse it.
                (Some(_), None) => {
                    return Err(ConfigError {
                        var: "S3_SECRET_ACCESS_KEY",
                        problem: "is not set, but S3_ACCESS_KEY_ID is: set both or neither".into(),
                    });
                }
                (None, Some(_)) => {
                    return Err(ConfigError {
                        var: "S3_ACCESS_KEY_ID",
                        problem: "is not set, but S3_SECRET_ACCESS_KEY is: set both or neither"
                            .into(),
                    });
                }
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

    #[test]
    fn without_static_keys_the_default_chain_is_used() {
        let cfg = StorageConfig::from_source(&source(&[("S3_BUCKET", "b")])).expect("valid");
        assert!(cfg.static_key.is_none());
    }

    #[test]
    fn half_a_static_key_is_refused() {
        let err =
            StorageConfig::from_source(&source(&[("S3_BUCKET", "b"), ("S3_ACCESS_KEY_ID", "GK1")]))
                .expect_err("refused");
        assert_eq!(err.var, "S3_SECRET_ACCESS_KEY");
        let err = StorageConfig::from_source(&source(&[
            ("S3_BUCKET", "b"),
            ("S3_SECRET_ACCESS_KEY", "s"),
        ]))
        .expect_err("refused");
        assert_eq!(err.var, "S3_ACCESS_KEY_ID");
    }
}
