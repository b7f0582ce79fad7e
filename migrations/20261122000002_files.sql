-- Files: uploads live in object storage, this table says what they are and whose.
--
-- The object key is derived from the owner and the file id, never from the user's file name,
-- so two uploads can never collide and a name cannot steer the key elsewhere.
create table files (
    id           uuid primary key,
    owner_id     uuid not null references users (id) on delete cascade,
    -- 'upload' for files the owner manages through /files; 'avatar' for profile images.
    purpose      text not null check (purpose in ('upload', 'avatar')),
    object_key   text not null unique,
    -- The name the client gave the file, for display only; never part of the key.
    name         text,
    size_bytes   bigint not null check (size_bytes >= 0),
    content_type text not null,
    -- Hex SHA-256 of the content, computed while streaming; null for direct-to-storage
    -- uploads, whose bytes never pass through an instance.
    sha256       text,
    -- 'pending' until a direct-to-storage upload is completed; streamed uploads are born
    -- 'available'.
    status       text not null check (status in ('pending', 'available')),
    -- Until when a pending upload may be completed (the presigned URL's expiry).
    upload_expires_at timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

-- The owner's listing, newest first, keyset-paginated on the time-ordered (v7) id.
create index files_owner_listing_idx on files (owner_id, purpose, id desc);
-- Abandoned direct uploads, for the purge job.
create index files_pending_expiry_idx on files (upload_expires_at) where status = 'pending';

-- Avatars: the profile points at an uploaded image; the thumbnail job turns it 'ready'.
-- Expand-only (nullable columns), so instances of the previous version keep working.
alter table users
    add column avatar_file_id uuid references files (id) on delete set null,
    add column avatar_status text check (avatar_status in ('pending', 'ready')),
    add column avatar_thumbnail_key text;
