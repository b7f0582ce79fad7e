//! scaleout: a reference SaaS backend that shows, working and tested, the patterns of
//! scaling a backend horizontally. See DESIGN.md for the map of patterns to modules.

pub mod accounts;
pub mod app;
pub mod cache;
pub mod config;
pub mod db;
pub mod email;
pub mod error;
pub mod files;
pub mod http;
pub mod jobs;
pub mod media_types;
pub mod plans;
pub mod process;
pub mod rate_limit;
pub mod redis_client;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod workspace;

// The paths tests and examples start processes by, kept while the modules live in `process`.
pub use process::serve as startup;
pub use process::worker;

/// Makes aws-lc-rs the process' TLS provider for rustls. Several providers are linked in (sqlx
/// brings ring), and clients that take the process default (Redis, sessions) refuse to guess
/// between them. Idempotent: every process entry point, and each in-process app of the tests,
/// calls it.
pub fn install_tls_provider() {
    // Err only when a provider is already installed, which is all this asks for.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
