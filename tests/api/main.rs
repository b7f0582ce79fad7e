//! The one integration-test binary (one link step; see DESIGN.md, "Local topology and tests").
//!
//! Run through `scripts/test`, which brings up a topology of its own and exports its
//! addresses. `topology*` tests stop and kill real processes or pause replication, so the
//! script runs them alone, one at a time, after everything else.

mod helpers;

mod accounts;
mod architecture;
mod drain;
mod file_lifecycle;
mod files;
mod health;
mod job_effects;
mod jobs;
mod metrics;
mod openapi;
mod rate_limits;
mod read_routing;
mod replication;
mod sessions;
mod topology;
mod topology_delivery;
mod topology_files;
mod topology_jobs;
mod topology_replicas;
mod topology_traces;
pub mod traces;
mod validation;
mod workspace;
mod workspace_invitations;
mod workspace_queries;
