//! Accounts and sessions: sign-up, login, logout (one device or all), the caller's profile,
//! password changes, public profiles, and account recovery (email verification, password
//! reset: `recovery`).
//!
//! Sessions live in Redis (tower-sessions with its Redis store), so any instance can serve any
//! request and one instance dying logs nobody out.

pub mod password;
pub mod recovery;
pub mod repo;
pub mod session;
pub mod validate;

pub use session::AuthUser;
