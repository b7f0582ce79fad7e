-- Background jobs. The queue itself is apalis' Postgres storage (schema `apalis`, set up by
-- `scaleout migrate` from apalis-postgres' own migrations); these tables serve the jobs.

-- Account deletion: set by DELETE /me in the same transaction that enqueues the deletion job.
-- A user with this set cannot log in; the job removes the row when it is done.
alter table users add column deletion_requested_at timestamptz;

-- Emails already handed to the SMTP server, by the job that sent them: a retried or
-- re-delivered email job finds its row and does not send twice. Holds the recipient, so it is
-- user data, removed with the account.
create table sent_emails (
    job_id    text primary key,
    user_id   uuid not null references users (id) on delete cascade,
    recipient text not null,
    sent_at   timestamptz not null default now()
);
create index sent_emails_user_idx on sent_emails (user_id);

-- Effects of canary jobs (synthetic jobs that prove the pipeline end to end): one row per job
-- however many times it runs, and how many runs there were.
create table canary_effects (
    job_id     text primary key,
    runs       integer not null default 1,
    applied_at timestamptz not null default now()
);
