-- When each attempt of a canary job started: the canary proves that retries back off, and the
-- gaps between its attempts are that proof. Small rows, kept like canary_effects.
create table canary_attempts (
    job_id     text not null,
    attempt    integer not null,
    -- clock_timestamp(), not now(): the moment the attempt began, not its transaction's start.
    started_at timestamptz not null default clock_timestamp(),
    primary key (job_id, attempt)
);
