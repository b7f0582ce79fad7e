//! Test plumbing, in four parts: the topology and its controls ([`topology`]), the processes
//! a test runs in-process ([`app`]), the API client ([`client`]) and the test data
//! ([`fixtures`]). Everything is re-exported here, so tests import `crate::helpers::X` without
//! knowing which part it lives in.

mod app;
mod client;
mod fixtures;
mod topology;

pub use app::*;
pub use client::*;
pub use fixtures::*;
pub use topology::*;
