//! The endpoints of each domain, with their request and response types beside them: thin
//! handlers that parse, call the domain (repos, services, jobs) and shape the answer. They sit
//! in the HTTP layer, above the domain modules they call, so no domain module imports them.

pub mod accounts;
pub mod files;
pub mod jobs;
pub mod plans;
pub mod recovery;
pub mod workspace;
