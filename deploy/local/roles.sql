-- The roles and the database of the local topology, made once on a new primary by
-- deploy/local/stack, which passes the passwords it generated as psql variables.
create role scaleout login password :'app_password';
create database scaleout owner scaleout;
create role replicator replication login password :'replication_password';
-- Operations on the replica without superuser: pausing and resuming replay injects real lag
-- (the replica tests do). Granted on the primary, so the replica inherits it.
create role scaleout_ops login password :'ops_password';
\connect scaleout
grant execute on function pg_wal_replay_pause() to scaleout_ops;
grant execute on function pg_wal_replay_resume() to scaleout_ops;
