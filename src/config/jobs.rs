//! The job worker (`scaleout worker`): how many jobs at once, how fast it notices others'
//! deaths, how it retries, and the schedule that purges and prunes.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `JOBS_CONCURRENCY` | `4` | Jobs one worker process runs at once |
//! | `JOBS_POLL_INTERVAL_MS` | `1000` | How often retries that have become due are looked for (new jobs arrive by NOTIFY) |
//! | `JOBS_HEARTBEAT_SECS` | `10` | How often each worker heartbeats |
//! | `JOBS_MISSED_HEARTBEATS` | `3` | Heartbeats a worker may miss before another re-queues its running jobs |
//! | `JOBS_TIMEOUT_SECS` | `300` | The longest one attempt of one job may take |
//! | `JOBS_BACKOFF_BASE_MS` | `2000` | Delay before the second attempt, doubling after |
//! | `JOBS_BACKOFF_MAX_MS` | `300000` | The longest delay between attempts |
//! | `JOBS_PURGE_INTERVAL_SECS` | `3600` | How often abandoned direct uploads are purged and old jobs pruned |
//! | `JOBS_PURGE_GRACE_SECS` | `3600` | How long past its URL's expiry a pending upload is kept (0 allowed) |
//! | `JOBS_RETENTION_DAYS` | `14` | Succeeded jobs are deleted this long after they finished; failed ones are kept |
//! | `JOBS_DELETION_COOLOFF_SECS` | `3600` | How long after its last attempt an account deletion out of attempts is queued again |

use std::time::Duration;

use super::{ConfigError, Fallback, Reader, Source, Var};

pub const VARS: &[Var] = &[
    Var {
        name: "JOBS_CONCURRENCY",
        default: Fallback::Value("4"),
        about: "Jobs one worker process runs at once",
    },
    Var {
        name: "JOBS_POLL_INTERVAL_MS",
        default: Fallback::Value("1000"),
        about: "How often retries that have become due are looked for (new jobs arrive by NOTIFY)",
    },
    Var {
        name: "JOBS_HEARTBEAT_SECS",
        default: Fallback::Value("10"),
        about: "How often each worker heartbeats",
    },
    Var {
        name: "JOBS_MISSED_HEARTBEATS",
        default: Fallback::Value("3"),
        about: "Heartbeats a worker may miss before another re-queues its running jobs",
    },
    Var {
        name: "JOBS_TIMEOUT_SECS",
        default: Fallback::Value("300"),
        about: "The longest one attempt of one job may take",
    },
    Var {
        name: "JOBS_BACKOFF_BASE_MS",
        default: Fallback::Value("2000"),
        about: "Delay before the second attempt, doubling after",
    },
    Var {
        name: "JOBS_BACKOFF_MAX_MS",
        default: Fallback::Value("300000"),
        about: "The longest delay between attempts",
    },
    Var {
        name: "JOBS_PURGE_INTERVAL_SECS",
        default: Fallback::Value("3600"),
        about: "How often abandoned direct uploads are purged and old jobs pruned",
    },
    Var {
        name: "JOBS_PURGE_GRACE_SECS",
        default: Fallback::Value("3600"),
        about: "How long past its URL's expiry a pending upload is kept (0 allowed)",
    },
    Var {
        name: "JOBS_RETENTION_DAYS",
        default: Fallback::Value("14"),
        about: "Succeeded jobs are deleted this long after they finished; failed ones are kept",
    },
    Var {
        name: "JOBS_DELETION_COOLOFF_SECS",
        default: Fallback::Value("3600"),
        about: "How long after its last attempt an account deletion out of attempts is queued again",
    },
];

/// The job worker: how many jobs at once, how fast it notices others' deaths, how it retries.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    pub concurrency: usize,
    pub poll_interval: Duration,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
    pub timeout: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub purge_interval: Duration,
    pub purge_grace: Duration,
    /// Succeeded jobs are deleted this many days after they finished.
    pub retention_days: u32,
    /// An account deletion out of attempts is queued again this long after its last one.
    pub deletion_cooloff: Duration,
}

impl JobsConfig {
    pub fn from_source(source: &dyn Source) -> Result<Self, ConfigError> {
        let r = Reader::new(source, VARS);
        Ok(Self {
            concurrency: r.positive("JOBS_CONCURRENCY")? as usize,
            poll_interval: r.duration("JOBS_POLL_INTERVAL_MS", Duration::from_millis)?,
            heartbeat: r.duration("JOBS_HEARTBEAT_SECS", Duration::from_secs)?,
            missed_heartbeats: r.positive("JOBS_MISSED_HEARTBEATS")? as usize,
            timeout: r.duration("JOBS_TIMEOUT_SECS", Duration::from_secs)?,
            backoff_base: r.duration("JOBS_BACKOFF_BASE_MS", Duration::from_millis)?,
            backoff_max: r.duration("JOBS_BACKOFF_MAX_MS", Duration::from_millis)?,
            purge_interval: r.duration("JOBS_PURGE_INTERVAL_SECS", Duration::from_secs)?,
            // Zero is allowed: purge a pending upload as soon as its URL has expired.
            purge_grace: Duration::from_secs(r.parse("JOBS_PURGE_GRACE_SECS")?),
            retention_days: r.positive("JOBS_RETENTION_DAYS")?,
            deletion_cooloff: r.duration("JOBS_DELETION_COOLOFF_SECS", Duration::from_secs)?,
        })
    }
}
