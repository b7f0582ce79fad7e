//! Account recovery: the single-use tokens that email verification and password reset send,
//! and all SQL on `account_tokens`.
//!
//! A token is 32 random bytes (hex in the email). Only its SHA-256 is stored, with the
//! account, the address it was sent to, its purpose and its expiry, so a leaked copy of the
//! table opens nothing. A token is used by one conditional `UPDATE ... WHERE used_at IS NULL
//! AND expires_at > now()`: two requests racing with the same token cannot both succeed.
//!
//! Lifetimes: a verification link is valid for [`VERIFY_EMAIL_TTL`] (7 days: people read mail
//! late, and the link only proves they own the address); a password reset for
//! [`PASSWORD_RESET_TTL`] (30 minutes: it can take over the account).

use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::db::Write;

pub const VERIFY_EMAIL_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
pub const PASSWORD_RESET_TTL: Duration = Duration::from_secs(30 * 60);

/// What a token may be used for; stored as the `purpose` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    PasswordReset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
        }
    }

    pub fn ttl(self) -> Duration {
        match self {
            Self::VerifyEmail => VERIFY_EMAIL_TTL,
            Self::PasswordReset => PASSWORD_RESET_TTL,
        }
    }
}

/// A token as the email carries it (64 hex digits). Not `Display`: it is printed only into
/// the email body, through [`Token::expose`].
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    fn generate() -> anyhow::Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        Ok(Self(hex::encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What is stored for a token: SHA-256 of its text. Whatever a client sends is hashed the
/// same way, so an unknown or malformed token simply matches no row.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.trim().as_bytes()).to_vec()
}

/// The account and address a valid token stands for.
#[derive(Debug, Clone)]
pub struct Holder {
    pub user_id: Uuid,
    pub email: String,
}

/// Makes a token for `user` at `email`, valid for the purpose's lifetime, and stores its hash.
#[tracing::instrument(skip_all, fields(purpose = purpose.as_str()))]
pub async fn issue(
    write: &mut Write,
    user: Uuid,
    email: &str,
    purpose: Purpose,
) -> anyhow::Result<Token> {
    let token = Token::generate()?;
    // The account's dead tokens go as it gets a new one: the table cleans itself, no sweep.
    sqlx::query!(
        "delete from account_tokens where user_id = $1 and expires_at < now()",
        user
    )
    .execute(&mut **write)
    .await?;
    let ttl_secs = purpose.ttl().as_secs() as f64;
    sqlx::query!(
        "insert into account_tokens (token_hash, user_id, purpose, email, expires_at)
         values ($1, $2, $3, $4, now() + make_interval(secs => $5))",
        digest(token.expose()),
        user,
        purpose.as_str(),
        email,
        ttl_secs,
    )
    .execute(&mut **write)
    .await?;
    Ok(token)
}

/// The holder of a token that is usable now (known, unused, unexpired), without using it:
/// lets a caller refuse a bad token before expensive work.
#[tracing::instrument(skip_all, fields(purpose = purpose.as_str()))]
pub async fn peek(
    db: impl PgExecutor<'_>,
    token: &str,
    purpose: Purpose,
) -> Result<Option<Holder>, sqlx::Error> {
    sqlx::query_as!(
        Holder,
        "select user_id, email from account_tokens
          where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()",
        digest(token),
        purpose.as_str(),
    )
    .fetch_optional(db)
    .await
}

/// Uses a token: `Some` once for a usable token, `None` for an unknown, used or expired one.
/// The change it authorises belongs in the same unit of work.
#[tracing::instrument(skip_all, fields(purpose = purpose.as_str()))]
pub async fn consume(
    write: &mut Write,
    token: &str,
    purpose: Purpose,
) -> Result<Option<Holder>, sqlx::Error> {
    sqlx::query_as!(
        Holder,
        "update account_tokens t set used_at = now()
          where token_hash = $1 and purpose = $2 and used_at is null and expires_at > now()
            -- A link sent to an address the account has since left is worth nothing.
            and lower(t.email) = (select lower(u.email) from users u where u.id = t.user_id)
      returning user_id, email",
        digest(token),
        purpose.as_str(),
    )
    .fetch_optional(&mut **write)
    .await
}

/// Spends every unused token of `purpose` the account holds: after a password reset or change,
/// an older reset email (seen by someone else, say) must not take the account back.
pub async fn revoke(write: &mut Write, user: Uuid, purpose: Purpose) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update account_tokens set used_at = now()
          where user_id = $1 and purpose = $2 and used_at is null",
        user,
        purpose.as_str(),
    )
    .execute(&mut **write)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_hex_and_stored_only_as_their_digest() {
        let a = Token::generate().expect("random");
        let b = Token::generate().expect("random");
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
        assert_eq!(digest(a.expose()).len(), 32);
        assert_ne!(digest(a.expose()), a.expose().as_bytes());
        assert_eq!(format!("{a:?}"), "Token(..)");
    }
}
