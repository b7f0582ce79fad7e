//! The team workspace: organizations (the tenants), their members and roles, invitations,
//! projects, tasks, comments, and the activity log.
//!
//! One module owns each table's SQL: `orgs` (organizations), `members` (memberships),
//! `invitations`, `projects`, `tasks`, `comments`, `events`. Every query of a tenant's rows
//! names the organization in its `where` clause, so a row of another tenant cannot be read or
//! changed by id alone. Lists page by keyset on the (time-ordered) id and take the page size
//! plus one: a constant number of statements whatever the page size (names and counts come by
//! join, never by a query per row).
//!
//! Every change writes its activity event in the same unit of work (`events::append`), so the
//! log and the data never disagree. The dashboard (`stats`) is cached in Redis; the write sites
//! invalidate it after their commit.

pub mod comments;
pub mod events;
pub mod invitations;
pub mod members;
pub mod orgs;
pub mod projects;
pub mod role;
pub mod stats;
pub mod tasks;
pub mod validate;

pub use role::Role;
