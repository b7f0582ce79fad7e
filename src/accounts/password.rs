//! Password hashing with Argon2id at OWASP's recommended cost (19 MiB, 2 passes, 1 lane).
//!
//! Hashing takes tens of milliseconds of CPU on purpose, so it runs on the blocking pool:
//! on the async workers it would stall every other request of the instance.

use std::sync::LazyLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody has: verifying against it when the email is unknown makes
/// "no such account" cost the same time as "wrong password" (no account enumeration).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_sync("a password that no account has").expect("hashing works"));

fn hash_sync(password: &str) -> anyhow::Result<String> {
    // 16 random bytes from the OS (a v4 UUID is 122 of them), as the salt.
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?
        .to_string())
}

fn verify_sync(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub async fn hash(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || hash_sync(&password)).await?
}

/// Verifies `password` against `phc`, or against the dummy hash when there is no account, so
/// both cases take the same time. Returns true only for a real match.
pub async fn verify(password: String, phc: Option<String>) -> anyhow::Result<bool> {
    Ok(tokio::task::spawn_blocking(move || match phc {
        Some(phc) => verify_sync(&password, &phc),
        None => {
            let _ = verify_sync(&password, &DUMMY_HASH);
            false
        }
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let phc = hash("correct horse battery".into()).await.expect("hashes");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            verify("correct horse battery".into(), Some(phc.clone()))
                .await
                .expect("runs")
        );
        assert!(
            !verify("wrong horse battery".into(), Some(phc))
                .await
                .expect("runs")
        );
        assert!(!verify("anything".into(), None).await.expect("runs"));
    }
}
