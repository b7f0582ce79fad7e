-- Account recovery: email verification and password reset.
--
-- An email is verified when a link sent to it was used; changing the email clears the mark
-- (accounts::repo::update_profile), so the mark always speaks of the current address.
alter table users add column email_verified_at timestamptz;

-- Single-use tokens sent by email. Only the SHA-256 of a token is stored: a copy of this table
-- (a backup, a replica) cannot be turned into working links. Each token is bound to the
-- address it was sent to, so a verification link for an old address cannot verify a new one.
-- Used tokens keep their row until they expire (so a second use is refused as "used"); the
-- rows go with the account.
create table account_tokens (
    token_hash bytea primary key,
    user_id    uuid not null references users (id) on delete cascade,
    purpose    text not null check (purpose in ('verify_email', 'password_reset')),
    email      text not null,
    expires_at timestamptz not null,
    used_at    timestamptz,
    created_at timestamptz not null default now()
);
create index account_tokens_user_idx on account_tokens (user_id);
create index account_tokens_expires_idx on account_tokens (expires_at);
