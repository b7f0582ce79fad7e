//! Organization deletion, after `DELETE /orgs/{id}` has marked it (from then on it is gone to
//! every query of the API).
//!
//! Its rows go table by table, children first (comments, tasks, projects, events,
//! invitations, files and their objects, memberships), in batches of [`BATCH`] rows, each
//! batch a short transaction of its own: a large organization never holds long locks or a
//! long transaction, and the job can stop anywhere. Idempotent: each step deletes what is
//! left; a run after a completed one finds the organization gone.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::worker::JobContext;
use crate::db::{Write, Writer};
use crate::files;
use crate::workspace::{comments, events, invitations, members, orgs, projects, tasks};

/// Rows per delete statement.
pub const BATCH: i64 = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteOrg {
    pub org_id: Uuid,
}

impl DeleteOrg {
    #[tracing::instrument(skip_all, fields(org = %self.org_id))]
    pub async fn run(&self, ctx: &JobContext<'_>) -> anyhow::Result<()> {
        let org = self.org_id;
        let db = &ctx.state.db;
        match orgs::marked_for_deletion(db.read_primary(), org).await? {
            None => {
                tracing::info!("already deleted");
                return Ok(());
            }
            Some(false) => anyhow::bail!("the organization is not marked for deletion"),
            Some(true) => {}
        }
        // The organization's files: objects first, then rows (an object without a row
        // would be lost to every sweep).
        loop {
            let keys = files::repo::object_keys_of_org(db.read_primary(), org, BATCH).await?;
            if keys.is_empty() {
                break;
            }
            for (_, key) in &keys {
                ctx.state.storage.delete_object(key).await?;
            }
            let ids: Vec<Uuid> = keys.iter().map(|(id, _)| *id).collect();
            let mut write = db.begin(Writer::System).await?;
            files::repo::delete_many(&mut write, &ids).await?;
            write.commit().await?;
        }
        let mut rows = 0;
        rows += drain(ctx, org, comments::delete_batch_of_org).await?;
        rows += drain(ctx, org, tasks::delete_batch_of_org).await?;
        rows += drain(ctx, org, projects::delete_batch_of_org).await?;
        rows += drain(ctx, org, events::delete_batch_of_org).await?;
        rows += drain(ctx, org, invitations::delete_batch_of_org).await?;
        rows += drain(ctx, org, members::delete_batch_of_org).await?;
        let mut write = db.begin(Writer::System).await?;
        orgs::delete_marked(&mut write, org).await?;
        write.commit().await?;
        tracing::info!(rows, "organization deleted");
        Ok(())
    }
}

/// Runs `step` in short transactions until it deletes nothing; how many rows went.
async fn drain<F>(ctx: &JobContext<'_>, org: Uuid, step: F) -> anyhow::Result<u64>
where
    F: for<'w> AsyncFn(&'w mut Write, Uuid, i64) -> Result<u64, sqlx::Error>,
{
    let mut total = 0;
    loop {
        let mut write = ctx.state.db.begin(Writer::System).await?;
        let n = step(&mut write, org, BATCH).await?;
        write.commit().await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// The organizations side of an account's deletion: every organization the account holds
/// alone is marked and queued for deletion (its own job), and every membership of the account
/// ends, in one unit of work. `DELETE /me` refuses an account that is the only owner of an
/// organization with other members; one who joined since keeps the organization, ownerless
/// until support steps in, rather than losing it.
pub async fn leave_all(ctx: &JobContext<'_>, user: Uuid) -> anyhow::Result<()> {
    let db = &ctx.state.db;
    let standing = members::standing_of(db.read_primary(), user).await?;
    let mut write = db.begin(Writer::System).await?;
    for org in standing.iter().filter(|s| s.alone) {
        if orgs::mark_for_deletion(&mut write, org.org_id).await? {
            let job = super::Job::DeleteOrg(DeleteOrg { org_id: org.org_id });
            super::enqueue(&mut write, job, None).await?;
        }
    }
    let left = members::remove_all_of_user(&mut write, user).await?;
    write.commit().await?;
    for org in &standing {
        // One fewer member (and tasks unassigned): the organizations' dashboards changed.
        ctx.state.stats.invalidate(org.org_id).await;
    }
    tracing::info!(memberships = left, "left every organization");
    Ok(())
}
