#!/usr/bin/env bash
# A streaming replica: on first start, clone the primary with pg_basebackup through a
# replication slot (the same steps deploy/local/stack performs), then run as a hot standby.
# REPLICATION_SLOT names the slot: one per replica.
set -euo pipefail
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h primary -p 5432 -q; do sleep 1; done
  PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup -h primary -p 5432 -U replicator \
    -D "$PGDATA" --write-recovery-conf --wal-method=stream --create-slot --slot="${REPLICATION_SLOT:-scaleout_replica}"
  chmod 700 "$PGDATA"
fi
exec postgres -c hot_standby=on
