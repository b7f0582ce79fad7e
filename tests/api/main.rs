//! The one integration-test binary (one link step; see DESIGN.md, "Local topology and tests").
//!
//! Run through `scripts/test`, which brings up a topology of its own and exports its
//! addresses. `topology*` tests stop and kill real processes or pause replication, so the
//! script runs them alone, one at a time, after everything else.

mod helpers;

mod accounts;
mod architecture;
mod deletion_retries;
mod direct_uploads;
mod drain;
mod edge;
mod file_lifecycle;
mod files;
mod health;
mod http_caching;
mod idempotency;
mod job_effects;
mod jobs;
mod limits;
mod managed_services;
mod metrics;
mod openapi;
mod rate_limits;
mod read_routing;
mod recovery;
mod replicas;
mod replication;
mod request_limits;
mod sessions;
mod stats;
mod topology;
mod topology_cache;
mod topology_delivery;
mod topology_edge_cache;
mod topology_files;
mod topology_jobs;
mod topology_limits;
mod topology_rate_limits;
mod topology_replicas;
mod topology_retries;
mod topology_storage;
mod topology_traces;
mod topology_worker_restarts;
pub mod traces;
mod validation;
mod workspace;
mod workspace_invitations;
mod workspace_queries;
