//! The welcome email, sent after signup.
//!
//! Idempotent as far as SMTP allows: a row in `sent_emails` per job records the handoff, and a
//! run that finds it sends nothing. A worker that dies between the server's acceptance and that
//! row can still send twice; the `Message-ID` is derived from the job, so the copy is
//! recognisable as one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::accounts;
use crate::db::Writer;
use crate::email::Email;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WelcomeEmail {
    pub user_id: Uuid,
}

impl WelcomeEmail {
    #[tracing::instrument(skip_all, fields(user = %self.user_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        let sent = sqlx::query_scalar!(
            "select exists (select 1 from sent_emails where job_id = $1) as \"sent!\"",
            ctx.job_id
        )
        .fetch_one(db.read_primary())
        .await?;
        if sent {
            tracing::info!("already sent");
            return Ok(());
        }
        let user = self.user_id;
        // A replica that has replayed the enqueuing write usually has the row; the position was
        // taken just before that transaction's commit, so a miss is confirmed on the primary.
        let found = db
            .read_after(ctx.lsn, |pool| async move {
                accounts::repo::recipient(&pool, user).await
            })
            .await?;
        let found = match found {
            Some(r) => Some(r),
            None => accounts::repo::recipient(db.read_primary(), user).await?,
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
        let mut write = db.begin(Writer::System).await?;
        sqlx::query!(
            "insert into sent_emails (job_id, user_id, recipient) values ($1, $2, $3)
             on conflict (job_id) do nothing",
            ctx.job_id,
            user,
            to.email
        )
        .execute(&mut *write)
        .await?;
        write.commit().await?;
        Ok(())
    }
}

/// Forgets up to `limit` of `user`'s sent emails (their account is going); returns how many.
pub async fn forget_sent_batch(
    db: impl sqlx::PgExecutor<'_>,
    user: Uuid,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "delete from sent_emails
          where job_id in (select job_id from sent_emails where user_id = $1 limit $2)",
        user,
        limit
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
