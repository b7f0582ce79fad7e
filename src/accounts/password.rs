//! Password hashing with Argon2id at OWASP's recommended cost (19 MiB, 2 passes, 1 lane).
//!
//! Hashing takes tens of milliseconds of CPU on purpose, so it runs on the blocking pool:
//! on the async workers it would stall every other request of the instance. And it is bounded:
//! [`Passwords`] lets `PASSWORD_HASHES_IN_FLIGHT` hashes run at once. A request waits up to
//! `PASSWORD_HASH_WAIT_MS` for a slot and is then refused with 503 and `Retry-After`, so a storm
//! of signups costs an instance a bounded amount of memory (19 MiB a hash) and leaves cores
//! for its other requests. The slot belongs to the hash itself, not to the request: a request
//! that times out cannot stop a running hash, and the slot stays taken until the hash ends.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("OWASP parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a password nobody has: verifying against it when the email is unknown makes
/// "no such account" cost the same time as "wrong password" (no account enumeration).
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_sync("a password that no account has").expect("hashing works"));

/// A hash made on the calling thread: for tools that run outside any request (the seed).
pub fn hash_sync(password: &str) -> anyhow::Result<String> {
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

/// The instance's password hashing, bounded by `PASSWORD_HASHES_IN_FLIGHT`. Every hash and
/// every verification goes through it.
#[derive(Debug, Clone)]
pub struct Passwords {
    slots: Arc<Semaphore>,
    wait: Duration,
}

impl Passwords {
    pub fn new(config: &crate::config::CapacityConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.password_hashes)),
            wait: config.password_hash_wait,
        }
    }

    /// A hashing slot, waiting at most `PASSWORD_HASH_WAIT_MS`; 503 with `Retry-After` after.
    /// Public so that tests can hold the slots themselves.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let acquired = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        match acquired {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or (never: the semaphore is not closed) closed.
            _ => {
                metrics::counter!("password_hash_rejections_total").increment(1);
                Err(ApiError::Overloaded {
                    what: "password hashes",
                    retry_after_secs: self.wait.as_secs().max(1),
                })
            }
        }
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot moves into the blocking
    /// task and is released when the work ends, also when the request has gone by then.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = self.slot().await?;
        let result = tokio::task::spawn_blocking(move || {
            let result = work();
            drop(slot);
            result
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(result)
    }

    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_sync(&password))
            .await?
            .map_err(ApiError::Internal)
    }

    /// Verifies `password` against `phc`, or against the dummy hash when there is no account,
    /// so both cases take the same time. Returns true only for a real match.
    pub async fn verify(&self, password: String, phc: Option<String>) -> Result<bool, ApiError> {
        self.run(move || match phc {
            Some(phc) => verify_sync(&password, &phc),
            None => {
                let _ = verify_sync(&password, &DUMMY_HASH);
                false
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords(in_flight: usize, wait: Duration) -> Passwords {
        Passwords::new(&crate::config::CapacityConfig {
            password_hashes: in_flight,
            password_hash_wait: wait,
            uploads: 1,
        })
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = passwords(2, Duration::from_secs(10));
        let (hash, verify) = (|p| passwords.hash(p), |p, h| passwords.verify(p, h));
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

    #[tokio::test]
    async fn a_hash_waits_for_a_slot_then_gives_up_with_retry_after() {
        let passwords = passwords(1, Duration::from_millis(50));
        let held = passwords.slot().await.expect("the one slot is free");

        let refused = passwords.hash("correct horse battery".into()).await;
        assert!(
            matches!(
                refused,
                Err(ApiError::Overloaded {
                    retry_after_secs: 1,
                    ..
                })
            ),
            "{refused:?}"
        );

        drop(held);
        assert!(passwords.hash("correct horse battery".into()).await.is_ok());
    }

    #[tokio::test]
    async fn a_hash_whose_caller_went_away_keeps_its_slot_until_it_ends() {
        let passwords = passwords(1, Duration::from_secs(30));
        // The caller gives up as soon as the hash has started: the slot stays with the hash
        // (another caller waits for it), and comes back when the hash ends.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(1),
            passwords.hash("correct horse battery".into()),
        )
        .await;
        assert!(abandoned.is_err(), "the caller gave up first");
        assert_eq!(
            passwords.slots.available_permits(),
            0,
            "the abandoned hash still holds its slot"
        );
        let next = passwords.slot().await.expect("the slot comes back");
        drop(next);
    }
}
