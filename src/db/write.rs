//! Writes as a unit of work: a transaction on the primary that knows whom it writes for.
//!
//! Committing a write is more than `COMMIT`. The writer's reads must stay on the primary until
//! the replicas have replayed the write (read-your-writes), and what the write caused (jobs it
//! enqueued) is counted only once it is certain. [`Write::commit`] does all of it, so no call
//! site can forget a step: `db.begin(Writer::User(id))`, run repos and `jobs::enqueue` on it,
//! `commit()`. Dropping a `Write` without committing rolls it back, and nothing after it runs.

use std::ops::{Deref, DerefMut};

use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use super::{Caller, Db};

/// Whom a write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A user (or a job acting for one): their next reads must see this write.
    User(Uuid),
    /// The system itself (a schedule, a sweep): nobody reads it back at once.
    System,
}

/// An open write on the primary. Derefs to the connection, so repos take `&mut *write`.
pub struct Write {
    tx: Transaction<'static, Postgres>,
    db: Db,
    writer: Writer,
    /// What to do once the commit is certain (count the jobs the write enqueued, say).
    after_commit: Vec<Box<dyn FnOnce() + Send>>,
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write")
            .field("writer", &self.writer)
            .field("after_commit", &self.after_commit.len())
            .finish_non_exhaustive()
    }
}

impl Write {
    pub(super) async fn begin(db: &Db, writer: Writer) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tx: db.0.primary.begin().await?,
            db: db.clone(),
            writer,
            after_commit: Vec::new(),
        })
    }

    pub fn writer(&self) -> Writer {
        self.writer
    }

    /// Runs `step` after a successful commit, never after a rollback.
    pub fn after_commit(&mut self, step: impl FnOnce() + Send + 'static) {
        self.after_commit.push(Box::new(step));
    }

    /// Commits; then records the writer's position for read-your-writes and runs the
    /// after-commit steps. Only the commit itself can fail: the write has happened once it
    /// returns, whatever the steps after it meet (they log and count their own failures).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self {
            tx,
            db,
            writer,
            after_commit,
        } = self;
        tx.commit().await?;
        if let Writer::User(user) = writer {
            db.wrote(&Caller::User(user)).await;
        }
        for step in after_commit {
            step();
        }
        Ok(())
    }
}

impl Deref for Write {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}
