//! Accounts and sessions: sign-up, login, logout (one device or all), the caller's profile,
//! password changes, and public profiles.
//!
//! Sessions live in Redis (tower-sessions with its Redis store), so any instance can serve any
//! request and one instance dying logs nobody out.

pub mod password;
pub mod repo;
pub mod session;
pub mod validate;

pub use session::AuthUser;
