-- Accounts. Every other user-owned table references users(id).
--
-- Emails are unique case-insensitively through an index on lower(email): a duplicate signup
-- is refused by the database itself, so two instances racing on the same address cannot both
-- win (no check-then-insert in the application).
create table users (
    id            uuid primary key,
    email         text not null,
    name          text not null,
    -- Argon2id PHC string; never selected by read endpoints.
    password_hash text not null,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

create unique index users_email_key on users (lower(email));
