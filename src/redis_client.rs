//! The shared Redis connection: rate-limit counters, read-your-writes positions and cache
//! entries live here so that every instance sees the same values.
//!
//! `rediss://` connects over TLS, checking the server's certificate against the system's roots
//! or `REDIS_CA_FILE`. The first connection refuses a server older than Redis 6.2 (see
//! [`MIN_VERSION`]).

use std::sync::Arc;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::RedisConfig;

/// The oldest server the application works with: the session store sets expiries with
/// `SET ... EXAT` (6.2). Nothing else needs more than Redis 6.0 (no `EXPIRE ... NX`, a 7.0
/// option: the rate limits set their expiry in a script instead).
pub const MIN_VERSION: (u32, u32) = (6, 2);

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("REDIS_CA_FILE: {0}")]
    CaFile(String),
    #[error(
        "redis {0} is too old: scaleout needs Redis 6.2 or later (the session store's SET ... EXAT)"
    )]
    TooOld(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

/// A multiplexed connection, opened on first use and re-opened by the manager after failures.
#[derive(Clone)]
pub struct RedisClient {
    client: redis::Client,
    config: RedisConfig,
    /// `REDIS_CA_FILE`'s certificates, for the sessions' client too.
    ca: Option<Arc<Vec<u8>>>,
    conn: Arc<OnceCell<ConnectionManager>>,
}

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClient").finish_non_exhaustive()
    }
}

impl RedisClient {
    /// Parses the URL only: like the database pools, Redis may come up after the process.
    pub fn new(config: &RedisConfig) -> Result<Self, RedisError> {
        // Error series exist from the start at zero, so dashboards and alerts see "no errors"
        // rather than "no data".
        for kind in ["error", "timeout", "connect"] {
            metrics::counter!("redis_errors_total", "kind" => kind).absolute(0);
        }
        crate::install_tls_provider();
        let ca = match &config.ca_file {
            Some(path) => Some(Arc::new(read_ca(path)?)),
            None => None,
        };
        let client = match &ca {
            // The bundle replaces the system's roots for this client.
            Some(pem) if config.url.expose().starts_with("rediss://") => {
                redis::Client::build_with_tls(
                    config.url.expose(),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem.to_vec()),
                    },
                )?
            }
            _ => redis::Client::open(config.url.expose())?,
        };
        Ok(Self {
            client,
            config: config.clone(),
            ca,
            conn: Arc::new(OnceCell::new()),
        })
    }

    /// A rustls configuration that trusts `REDIS_CA_FILE` only, for the sessions' client
    /// (fred); `None` without the variable (fred then trusts the system's roots).
    pub fn tls_config(&self) -> Result<Option<rustls::ClientConfig>, RedisError> {
        let Some(pem) = &self.ca else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in roots_in(pem)? {
            roots
                .add(cert)
                .map_err(|e| RedisError::CaFile(format!("a certificate is refused: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| RedisError::CaFile(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(config))
    }

    /// The shared connection, connecting first if needed, within the configured timeout.
    pub async fn conn(&self) -> Result<ConnectionManager, RedisError> {
        let timeout = self.config.timeout;
        let init = async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                // Fail fast and let the next call reconnect: a request must not wait out a
                // retry loop while Redis is away.
                .set_number_of_retries(1);
            let mut conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
            check_version(&mut conn).await?;
            Ok::<_, RedisError>(conn)
        };
        let conn = tokio::time::timeout(timeout, self.conn.get_or_try_init(|| init))
            .await
            .map_err(|_| {
                metrics::counter!("redis_errors_total", "kind" => "connect").increment(1);
                RedisError::Timeout(timeout)
            })??;
        Ok(conn.clone())
    }

    /// Runs one command (or pipeline) within the configured timeout. Every command passes
    /// here, so this is where Redis latency and errors are measured, and where the `redis`
    /// client span of a trace is made.
    pub async fn bounded<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let timeout = self.config.timeout;
        let start = std::time::Instant::now();
        let span = tracing::info_span!("redis", otel.kind = "client");
        let result =
            tracing::Instrument::instrument(tokio::time::timeout(timeout, command), span).await;
        metrics::histogram!("redis_command_duration_seconds").record(start.elapsed().as_secs_f64());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                metrics::counter!("redis_errors_total", "kind" => "error").increment(1);
                Err(e.into())
            }
            Err(_) => {
                metrics::counter!("redis_errors_total", "kind" => "timeout").increment(1);
                Err(RedisError::Timeout(timeout))
            }
        }
    }

    /// `PING`, bounded by the configured timeout: the readiness check.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await?;
        Ok(())
    }
}

fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, RedisError> {
    let pem = std::fs::read(path)
        .map_err(|e| RedisError::CaFile(format!("cannot read {}: {e}", path.display())))?;
    if roots_in(&pem)?.is_empty() {
        return Err(RedisError::CaFile(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(pem)
}

fn roots_in(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, RedisError> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RedisError::CaFile(format!("not a PEM bundle: {e}")))
}

/// Refuses a server older than [`MIN_VERSION`] on the first connection (Redis may come up
/// after the process, so this cannot run at start): every command would otherwise work until
/// the first session is saved.
async fn check_version(conn: &mut ConnectionManager) -> Result<(), RedisError> {
    let info: String = match redis::cmd("INFO").arg("server").query_async(conn).await {
        Ok(info) => info,
        // Some managed services rename or restrict INFO: then the version is not checked.
        Err(e) => {
            tracing::warn!(error = %e, "redis INFO refused; its version is not checked");
            return Ok(());
        }
    };
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    if parse_version(version).is_some_and(|v| v < MIN_VERSION) {
        tracing::error!(version, "redis is too old: 6.2 or later is needed");
        return Err(RedisError::TooOld(version.to_owned()));
    }
    Ok(())
}

/// `major.minor` of a `redis_version` (Valkey reports a compatible Redis version there).
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_before_6_2_are_too_old() {
        for (version, ok) in [
            ("6.0.16", false),
            ("5.0.7", false),
            ("6.2.0", true),
            ("7.0.15", true),
            ("7.2.4", true),
        ] {
            let parsed = parse_version(version).expect("parsed");
            assert_eq!(parsed >= MIN_VERSION, ok, "{version}");
        }
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn a_file_without_certificates_is_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("scaleout-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").expect("written");
        let err = read_ca(&path).expect_err("refused");
        assert!(err.to_string().contains("empty.pem"), "{err}");
        let err = read_ca(&dir.join("missing.pem")).expect_err("refused");
        assert!(
            err.to_string().starts_with("REDIS_CA_FILE: cannot read"),
            "{err}"
        );
    }
}
