//! Purges abandoned direct uploads: files still `pending` well after their presigned URL
//! expired. The client may have uploaded bytes without ever calling `complete`; those staging
//! objects go too, as do staging objects older than any completion could need. Runs on a
//! schedule (see `schedule`), once per interval across all workers.
//!
//! Idempotent: it deletes what is still pending and expired; a second run finds less or nothing.

use serde::{Deserialize, Serialize};

use super::worker::JobContext;
use crate::db::Writer;
use crate::files::{self, object_key};

const BATCH: i64 = 100;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PurgeUploads {
    /// The schedule slot this run belongs to (its deduplication key).
    pub slot: i64,
}

impl PurgeUploads {
    #[tracing::instrument(skip_all, fields(slot = self.slot))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let db = &ctx.state.db;
        let grace = ctx.state.config.jobs.purge_grace;
        let mut purged = 0;
        loop {
            // Each file is claimed (row-locked) while its object goes: a `complete` arriving
            // meanwhile waits, then finds the file gone (404) instead of making available a
            // file whose object was just deleted. One that committed first is not pending.
            let mut write = db.begin(Writer::System).await?;
            let batch = files::repo::claim_abandoned(&mut write, grace, BATCH).await?;
            if batch.is_empty() {
                break;
            }
            for file in &batch {
                let staging = object_key::staging(file.owner_id, file.id);
                ctx.state.storage.delete_object(&staging).await?;
            }
            let ids: Vec<_> = batch.iter().map(|f| f.id).collect();
            files::repo::delete_many(&mut write, &ids).await?;
            write.commit().await?;
            purged += batch.len();
        }
        // Staging objects that outlived any completion: a URL used again after `complete` or
        // after the file was deleted leaves one behind, with no row pointing to it.
        let window = ctx.state.config.files.upload_url_ttl + ctx.state.config.jobs.purge_grace;
        let cutoff = std::time::SystemTime::now() - window;
        let stale = ctx
            .state
            .storage
            .list_keys_older_than(object_key::STAGING_PREFIX, cutoff, 1000)
            .await?;
        for key in &stale {
            ctx.state.storage.delete_object(key).await?;
        }
        tracing::info!(purged, stale = stale.len(), "abandoned uploads purged");
        Ok(())
    }
}
