//! The password-reset email. The request that asks for it queues this job whatever the
//! address (so its answer and its timing say nothing about whether an account exists); the
//! job looks the address up and, for an account that may recover access, makes a token valid
//! for 30 minutes and sends it. For an unknown address it sends nothing.
//!
//! Idempotent like the other emails (a `sent_emails` row per job sent).

use serde::{Deserialize, Serialize};

use super::verification_email::{already_sent, record_sent};
use super::worker::JobContext;
use crate::accounts::{self, recovery};
use crate::db::Writer;
use crate::email::Email;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordResetEmail {
    /// The address as entered (matched case-insensitively).
    pub email: String,
}

impl PasswordResetEmail {
    #[tracing::instrument(skip_all)]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        if already_sent(ctx).await? {
            return Ok(());
        }
        let Some((user, address)) =
            accounts::repo::recoverable_by_email(db.read_primary(), &self.email).await?
        else {
            tracing::info!("no account may recover with this address; nothing to send");
            return Ok(());
        };
        // A system write: the account never reads its tokens back, so there is no read of
        // its own to keep on the primary (a user write would pin its reads there for nothing).
        let mut write = db.begin(Writer::System).await?;
        let token =
            recovery::issue(&mut write, user, &address, recovery::Purpose::PasswordReset).await?;
        write.commit().await?;
        ctx.state
            .mailer
            .send(&Email {
                to: &address,
                subject: "Reset your scaleout password",
                body: format!(
                    "Hello,\n\nsomeone (hopefully you) asked to reset the password of this \
                     account. Your reset token (valid for {} minutes, once):\n\ntoken: {}\n\n\
                     Use it with POST /api/v1/auth/password-reset/confirm \
                     {{\"token\": \"...\", \"new_password\": \"...\"}}. Every session of the \
                     account ends when the password changes. If you did not ask, ignore this \
                     email: the password stays as it is.\n\n-- scaleout\n",
                    recovery::PASSWORD_RESET_TTL.as_secs() / 60,
                    token.expose()
                ),
                message_id: format!("<{}@scaleout>", ctx.job_id),
            })
            .await?;
        record_sent(ctx, user, &address).await
    }
}
