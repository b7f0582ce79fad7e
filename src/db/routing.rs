//! Where a read goes. A pure decision over what the instance knows, so the whole table is
//! unit-tested without servers.
//!
//! - No healthy replica: the primary (`unhealthy`).
//! - The caller's last write position cannot be read from Redis: the primary (`sticky_unknown`):
//!   never risk showing a user a state older than their own write.
//! - The caller wrote recently: a healthy replica that has replayed that position, else the
//!   primary (`sticky`). Once every replica has replayed it, the position is forgotten.
//! - Otherwise: a healthy replica (`replica`).

use super::lsn::Lsn;

/// What the instance knows about the caller's last write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sticky {
    /// No recent write (or an anonymous caller).
    None,
    /// Wrote at this position, less than the read-your-writes TTL ago.
    At(Lsn),
    /// Redis did not answer.
    Unknown,
}

/// What the instance knows about one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView {
    pub healthy: bool,
    /// Replayed position, when it was needed and could be read.
    pub replayed: Option<Lsn>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    Replica(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Replica,
    Sticky,
    StickyUnknown,
    Unhealthy,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Replica => "replica",
            Reason::Sticky => "sticky",
            Reason::StickyUnknown => "sticky_unknown",
            Reason::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub target: Target,
    pub reason: Reason,
    /// Every replica has replayed the caller's write: the sticky position can be dropped.
    pub unstick: bool,
}

/// `pick` spreads plain reads over the healthy replicas (a request counter, say).
pub fn decide(replicas: &[ReplicaView], sticky: Sticky, pick: usize) -> Decision {
    let primary = |reason| Decision {
        target: Target::Primary,
        reason,
        unstick: false,
    };
    let healthy: Vec<usize> = (0..replicas.len())
        .filter(|&i| replicas[i].healthy)
        .collect();
    if healthy.is_empty() {
        return primary(Reason::Unhealthy);
    }
    match sticky {
        Sticky::Unknown => primary(Reason::StickyUnknown),
        Sticky::None => Decision {
            target: Target::Replica(healthy[pick % healthy.len()]),
            reason: Reason::Replica,
            unstick: false,
        },
        Sticky::At(lsn) => {
            let caught_up = |i: usize| replicas[i].replayed.is_some_and(|r| r >= lsn);
            let ready: Vec<usize> = healthy.iter().copied().filter(|&i| caught_up(i)).collect();
            if ready.is_empty() {
                return primary(Reason::Sticky);
            }
            Decision {
                target: Target::Replica(ready[pick % ready.len()]),
                reason: Reason::Replica,
                unstick: (0..replicas.len()).all(caught_up),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: ReplicaView = ReplicaView {
        healthy: true,
        replayed: None,
    };

    fn at(n: u64) -> ReplicaView {
        ReplicaView {
            healthy: true,
            replayed: Some(Lsn(n)),
        }
    }

    fn down(n: u64) -> ReplicaView {
        ReplicaView {
            healthy: false,
            replayed: Some(Lsn(n)),
        }
    }

    #[test]
    fn the_decision_table() {
        let cases: &[(&[ReplicaView], Sticky, Target, Reason, bool)] = &[
            // No replica at all, or none healthy.
            (&[], Sticky::None, Target::Primary, Reason::Unhealthy, false),
            (
                &[down(9)],
                Sticky::None,
                Target::Primary,
                Reason::Unhealthy,
                false,
            ),
            // Plain reads go to a healthy replica.
            (
                &[UP],
                Sticky::None,
                Target::Replica(0),
                Reason::Replica,
                false,
            ),
            (
                &[down(9), UP],
                Sticky::None,
                Target::Replica(1),
                Reason::Replica,
                false,
            ),
            // Redis away: the primary, whatever the replicas say.
            (
                &[at(9)],
                Sticky::Unknown,
                Target::Primary,
                Reason::StickyUnknown,
                false,
            ),
            // Sticky and not replayed yet: the primary.
            (
                &[at(4)],
                Sticky::At(Lsn(5)),
                Target::Primary,
                Reason::Sticky,
                false,
            ),
            (
                &[UP],
                Sticky::At(Lsn(5)),
                Target::Primary,
                Reason::Sticky,
                false,
            ),
            // Replayed exactly or beyond: the replica, and forget the position.
            (
                &[at(5)],
                Sticky::At(Lsn(5)),
                Target::Replica(0),
                Reason::Replica,
                true,
            ),
            (
                &[at(7)],
                Sticky::At(Lsn(5)),
                Target::Replica(0),
                Reason::Replica,
                true,
            ),
            // Several replicas: read from one that caught up, unstick only when all have.
            (
                &[at(4), at(6)],
                Sticky::At(Lsn(5)),
                Target::Replica(1),
                Reason::Replica,
                false,
            ),
            (
                &[at(6), at(6)],
                Sticky::At(Lsn(5)),
                Target::Replica(0),
                Reason::Replica,
                true,
            ),
            // An unhealthy replica that lags keeps the position alive.
            (
                &[down(1), at(6)],
                Sticky::At(Lsn(5)),
                Target::Replica(1),
                Reason::Replica,
                false,
            ),
        ];
        for (i, (replicas, sticky, target, reason, unstick)) in cases.iter().enumerate() {
            let d = decide(replicas, *sticky, 0);
            assert_eq!(
                (d.target, d.reason, d.unstick),
                (*target, *reason, *unstick),
                "case {i}"
            );
        }
    }

    #[test]
    fn plain_reads_spread_over_healthy_replicas() {
        let replicas = [UP, down(0), UP];
        let targets: Vec<_> = (0..4)
            .map(|p| decide(&replicas, Sticky::None, p).target)
            .collect();
        assert_eq!(
            targets,
            [
                Target::Replica(0),
                Target::Replica(2),
                Target::Replica(0),
                Target::Replica(2)
            ]
        );
    }
}
