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
use crate::db::Writer;
use crate::files::object_key;
use crate::{accounts, files};

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
        let db = &state.db;

        match accounts::repo::marked_for_deletion(db.read_primary(), user).await? {
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

        // The avatar points into files; unhook it before the files go. Each statement is a
        // write of its own: short, and nobody reads an account being deleted.
        let mut write = db.begin(Writer::System).await?;
        accounts::repo::unhook_avatar(&mut write, user).await?;
        write.commit().await?;
        let mut rows = 0;
        loop {
            let mut write = db.begin(Writer::System).await?;
            let files = files::repo::delete_batch_of_owner(&mut write, user, BATCH).await?;
            let emails = super::welcome_email::forget_sent_batch(&mut *write, user, BATCH).await?;
            write.commit().await?;
            if files + emails == 0 {
                break;
            }
            rows += files + emails;
        }
        super::delete_org::leave_all(ctx, user).await?;
        let mut write = db.begin(Writer::System).await?;
        accounts::repo::delete_marked(&mut write, user).await?;
        write.commit().await?;
        tracing::info!(objects, rows, "account deleted");
        Ok(())
    }
}
