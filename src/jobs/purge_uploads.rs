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
            // The rows go first, in a short write of their own; their staging objects after
            // the commit, so no transaction (nor its connection) waits on storage. A
            // `complete` running meanwhile finds its file gone when it writes (404). An object
            // whose deletion fails here is a staging leftover: the sweep below removes it.
            let mut write = db.begin(Writer::System).await?;
            let batch = files::repo::delete_abandoned(&mut write, grace, BATCH).await?;
            write.commit().await?;
            if batch.is_empty() {
                break;
            }
            for file in &batch {
                let staging = object_key::staging(file.owner_id, file.id);
                ctx.state.storage.delete_object(&staging).await?;
            }
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
