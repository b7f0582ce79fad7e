//! The email verification link, sent at signup and after an email change.
//!
//! The token is made here, by the job, not by the request: it exists only as a hash in
//! `account_tokens` and in the email, never in the queue's payload. Idempotent like the welcome
//! email (a `sent_emails` row per job); a worker dying between the SMTP server's acceptance
//! and that row sends a second email with a second valid link, which is harmless.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::accounts::{self, recovery};
use crate::db::Writer;
use crate::email::Email;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerificationEmail {
    pub user_id: Uuid,
    /// The address to verify, as it was when the job was queued: if the account has moved on
    /// to another address since, this link is not sent (that change queued its own).
    pub email: String,
}

impl VerificationEmail {
    #[tracing::instrument(skip_all, fields(user = %self.user_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        if already_sent(ctx).await? {
            return Ok(());
        }
        // The primary: the job is queued in the transaction that wrote the address, and the
        // check must see the latest address (a replica could lag behind a second change).
        let Some(to) = accounts::repo::recipient(db.read_primary(), self.user_id).await? else {
            tracing::info!("the account is gone or being deleted; nothing to send");
            return Ok(());
        };
        if !to.email.eq_ignore_ascii_case(&self.email) {
            tracing::info!("the address has changed since; its own link is on its way");
            return Ok(());
        }
        // A system write: the account never reads its tokens back, so there is no read of
        // its own to keep on the primary (a user write would pin its reads there for nothing).
        let mut write = db.begin(Writer::System).await?;
        let token = recovery::issue(
            &mut write,
            self.user_id,
            &to.email,
            recovery::Purpose::VerifyEmail,
        )
        .await?;
        write.commit().await?;
        ctx.state
            .mailer
            .send(&Email {
                to: &to.email,
                subject: "Verify your email address",
                body: format!(
                    "Hello {},\n\nplease confirm that this is your address. Your verification \
                     token (valid for {} days):\n\ntoken: {}\n\nUse it with POST \
                     /api/v1/auth/verify {{\"token\": \"...\"}}.\n\n-- scaleout\n",
                    to.name,
                    recovery::VERIFY_EMAIL_TTL.as_secs() / 86400,
                    token.expose()
                ),
                message_id: format!("<{}@scaleout>", ctx.job_id),
            })
            .await?;
        record_sent(ctx, self.user_id, &to.email).await
    }
}

/// Whether this job's email was already handed to the SMTP server (a retried or re-delivered
/// job then sends nothing).
pub(super) async fn already_sent(ctx: &JobContext<'_>) -> anyhow::Result<bool> {
    let sent = sqlx::query_scalar!(
        "select exists (select 1 from sent_emails where job_id = $1) as \"sent!\"",
        ctx.job_id
    )
    .fetch_one(ctx.state.db.read_primary())
    .await?;
    if sent {
        tracing::info!("already sent");
    }
    Ok(sent)
}

/// Records the handoff of this job's email.
pub(super) async fn record_sent(
    ctx: &JobContext<'_>,
    user: Uuid,
    recipient: &str,
) -> anyhow::Result<()> {
    let mut write = ctx.state.db.begin(Writer::System).await?;
    sqlx::query!(
        "insert into sent_emails (job_id, user_id, recipient) values ($1, $2, $3)
         on conflict (job_id) do nothing",
        ctx.job_id,
        user,
        recipient
    )
    .execute(&mut *write)
    .await?;
    write.commit().await?;
    Ok(())
}
