//! scaleout: a reference SaaS backend that shows, working and tested, the patterns of
//! scaling a backend horizontally. See DESIGN.md for the map of patterns to modules.

pub mod accounts;
pub mod app;
pub mod config;
pub mod db;
pub mod email;
pub mod error;
pub mod files;
pub mod http;
pub mod internal;
pub mod jobs;
pub mod media_types;
pub mod rate_limit;
pub mod redis_client;
pub mod shutdown;
pub mod startup;
pub mod storage;
pub mod telemetry;
pub mod worker;
