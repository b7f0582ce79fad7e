//! The welcome email, sent after signup.
//!
//! Idempotent as far as SMTP allows: a row in `sent_emails` per job records the handoff, and a
//! run that finds it sends nothing. A worker that dies between the server's acceptance and that
//! row can still send twice; the `Message-ID` is derived from the job, so the copy is
//! recognisable as one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::email::Email;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelcomeEmail {
    pub user_id: Uuid,
}

struct Recipient {
    email: String,
    name: String,
}

async fn recipient(db: &sqlx::PgPool, user: Uuid) -> Result<Option<Recipient>, sqlx::Error> {
    sqlx::query_as!(
        Recipient,
        "select email, name from users where id = $1 and deletion_requested_at is null",
        user
    )
    .fetch_optional(db)
    .await
}

impl WelcomeEmail {
    #[tracing::instrument(skip_all, fields(user = %self.user_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        let sent = sqlx::query_scalar!(
            "select exists (select 1 from sent_emails where job_id = $1) as \"sent!\"",
            ctx.job_id
        )
        .fetch_one(db.write())
        .await?;
        if sent {
            tracing::info!("already sent");
            return Ok(());
        }
        let user = self.user_id;
        // A replica that has replayed the enqueuing write usually has the row; the position was
        // taken just before that transaction's commit, so a miss is confirmed on the primary.
        let found = db
            .read_after(ctx.lsn, |pool| async move { recipient(&pool, user).await })
            .await?;
        let found = match found {
            Some(r) => Some(r),
            None => recipient(db.read_primary(), user).await?,
        };
        let Some(to) = found else {
            tracing::info!("the account is gone or being deleted; nothing to send");
            return Ok(());
        };
        ctx.state
            .mailer
            .send(&Email {
                to: &to.email,
                subject: "Welcome to scaleout",
                body: format!(
                    "Hello {},\n\nyour scaleout account is ready.\n\n-- scaleout\n",
                    to.name
                ),
                message_id: format!("<{}@scaleout>", ctx.job_id),
            })
            .await?;
        sqlx::query!(
            "insert into sent_emails (job_id, user_id, recipient) values ($1, $2, $3)
             on conflict (job_id) do nothing",
            ctx.job_id,
            user,
            to.email
        )
        .execute(db.write())
        .await?;
        Ok(())
    }
}
