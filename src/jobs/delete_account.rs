//! Account deletion, after `DELETE /me` has marked the account and ended its sessions.
//!
//! Everything the user owns goes: sessions (again, in case Redis failed during the request),
//! every object under their storage prefix, then their rows in batches (files, sent emails),
//! and last the account itself, which frees the email for a new signup. Batches keep each
//! statement short, so a large account never holds long locks or a long transaction.
//!
//! Idempotent: each step deletes what is left; a run after a completed one finds nothing.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::files::object_key;

/// Rows per delete statement.
const BATCH: i64 = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteAccount {
    pub user_id: Uuid,
}

impl DeleteAccount {
    #[tracing::instrument(skip_all, fields(user = %self.user_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let user = self.user_id;
        let state = ctx.state;
        let db = state.db.write();

        let marked = sqlx::query_scalar!(
            r#"select deletion_requested_at is not null as "marked!" from users where id = $1"#,
            user
        )
        .fetch_optional(db)
        .await?;
        match marked {
            None => {
                tracing::info!("already deleted");
                return Ok(());
            }
            // Never delete an account that did not ask for it.
            Some(false) => anyhow::bail!("the account is not marked for deletion"),
            Some(true) => {}
        }

        state.sessions.end_all_except(user, None).await?;

        let mut objects = 0;
        for prefix in [
            object_key::owner_prefix(user),
            object_key::owner_staging_prefix(user),
        ] {
            // Unfinished multipart uploads are invisible to listings of objects; abort them.
            state.storage.abort_multipart_uploads(&prefix).await?;
            loop {
                let keys = state.storage.list_keys(&prefix).await?;
                if keys.is_empty() {
                    break;
                }
                for key in &keys {
                    state.storage.delete_object(key).await?;
                }
                objects += keys.len();
            }
        }

        // The avatar points into files; unhook it before the files go.
        sqlx::query!("update users set avatar_file_id = null where id = $1", user)
            .execute(db)
            .await?;
        let files = in_batches(|| async move {
            sqlx::query!(
                "delete from files where id in (select id from files where owner_id = $1 limit $2)",
                user,
                BATCH
            )
            .execute(db)
            .await
        })
        .await?;
        let emails = in_batches(|| async move {
            sqlx::query!(
                "delete from sent_emails
                  where job_id in (select job_id from sent_emails where user_id = $1 limit $2)",
                user,
                BATCH
            )
            .execute(db)
            .await
        })
        .await?;
        let rows = files + emails;
        sqlx::query!(
            "delete from users where id = $1 and deletion_requested_at is not null",
            user
        )
        .execute(db)
        .await?;
        tracing::info!(objects, rows, "account deleted");
        Ok(())
    }
}

/// Runs one batch `delete` until it deletes nothing; returns how many rows went in all.
async fn in_batches<F, Fut>(mut batch: F) -> Result<u64, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<sqlx::postgres::PgQueryResult, sqlx::Error>>,
{
    let mut total = 0;
    loop {
        let done = batch().await?.rows_affected();
        if done == 0 {
            return Ok(total);
        }
        total += done;
    }
}
