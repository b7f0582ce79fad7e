//! Logs and traces (every process).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LOG_FORMAT` | `json` | `json` (one object per line, for log pipelines) or `pretty` (for a terminal) |
//! | `RUST_LOG` | `info` | Filter, in tracing's `EnvFilter` syntax |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | no trace export | OTLP/HTTP collector base URL, `http://` or `https://` (`http://collector:4318`); spans go to `/v1/traces` |

use super::{ConfigError, Fallback, Reader, Source, Var, check_scheme};

pub const VARS: &[Var] = &[
    Var {
        name: "LOG_FORMAT",
        default: Fallback::Value("json"),
        about: "`json` (one object per line, for log pipelines) or `pretty` (for a terminal)",
    },
    Var {
        name: "RUST_LOG",
        default: Fallback::Value("info"),
        about: "Filter, in tracing's `EnvFilter` syntax",
    },
    Var {
        name: "OTEL_EXPORTER_OTLP_ENDPOINT",
        default: Fallback::Unset("no trace export"),
        about: "OTLP/HTTP collector base URL, `http://` or `https://` (`http://collector:4318`); spans go to `/v1/traces`",
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
    /// OTLP/HTTP collector base URL, `http://` or `https://` (`http://collector:4318`); spans go to `/v1/traces`.
    pub otlp_endpoint: Option<String>,
}

impl LogConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        let format = match r.text("LOG_FORMAT").as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                return Err(ConfigError {
                    var: "LOG_FORMAT",
                    problem: format!("must be json or pretty, not {other:?}"),
                });
            }
        };
        let otlp_endpoint = match r.raw("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(e) => {
                check_scheme("OTEL_EXPORTER_OTLP_ENDPOINT", &e, &["http", "https"])?;
                Some(e)
            }
            None => None,
        };
        Ok(Self {
            format,
            filter: r.text("RUST_LOG"),
            otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::source;

    #[test]
    fn unknown_log_formats_are_refused() {
        let err = LogConfig::from_source(&source(&[("LOG_FORMAT", "xml")])).expect_err("refused");
        assert_eq!(err.var, "LOG_FORMAT");
    }
}
