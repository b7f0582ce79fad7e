-- The team workspace: organizations (the tenants), their members and invitations, projects,
-- tasks, comments, and the activity log.
--
-- Conventions of every table here:
-- - ids are UUIDv7 made by the application: time-ordered, so lists page by keyset on the id
--   alone (unique, indexed, in creation order) and never by OFFSET;
-- - every row of a tenant carries `org_id`, so every query names its tenant and an
--   organization's data can be deleted table by table, in batches, by that column;
-- - every foreign key leads an index (tests/api/workspace_queries.rs reads the catalog and
--   fails otherwise): deleting or updating the referenced row never scans the referencing
--   table;
-- - references to the organization are plain (no cascade): an organization is deleted in
--   the background, in short batches, child tables first. References to users that outlive
--   the user (who created a task) are set null when the account goes.

create table organizations (
    id         uuid primary key,
    name       text not null check (char_length(name) between 1 and 100),
    -- URL-friendly and unique among all organizations.
    slug       text not null check (slug ~ '^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$'),
    -- Set when the deletion job is queued: from then on the organization is gone to every
    -- query of the API, while the job removes its rows.
    deletion_requested_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint organizations_slug_key unique (slug)
);

create table memberships (
    org_id     uuid not null references organizations (id),
    user_id    uuid not null references users (id),
    role       text not null check (role in ('owner', 'admin', 'member', 'viewer')),
    created_at timestamptz not null default now(),
    primary key (org_id, user_id)
);
-- The caller's organizations (GET /orgs), and every membership of an account being deleted.
create index memberships_user_idx on memberships (user_id, org_id);

create table invitations (
    id          uuid primary key,
    org_id      uuid not null references organizations (id),
    email       text not null check (char_length(email) <= 254),
    role        text not null check (role in ('admin', 'member', 'viewer')),
    -- SHA-256 of the token the email carries; the token itself is never stored, not even in
    -- the job queue: the email job makes the token and stores its hash just before sending.
    -- Null until then.
    token_hash  bytea,
    -- When the email was handed to the SMTP server: a retried job sends nothing more.
    emailed_at  timestamptz,
    invited_by  uuid references users (id) on delete set null,
    expires_at  timestamptz not null,
    accepted_at timestamptz,
    accepted_by uuid references users (id) on delete set null,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now(),
    constraint invitations_token_hash_key unique (token_hash)
);
create index invitations_org_idx on invitations (org_id, id);
create index invitations_invited_by_idx on invitations (invited_by);
create index invitations_accepted_by_idx on invitations (accepted_by);

create table projects (
    id          uuid primary key,
    org_id      uuid not null references organizations (id),
    name        text not null check (char_length(name) between 1 and 100),
    description text not null default '' check (char_length(description) <= 2000),
    created_by  uuid references users (id) on delete set null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    -- The target of the tasks' (org_id, project_id) reference: a task's project is in the
    -- task's organization, by construction.
    constraint projects_org_id_id_key unique (org_id, id)
);
create index projects_created_by_idx on projects (created_by);

create table tasks (
    id          uuid primary key,
    org_id      uuid not null references organizations (id),
    project_id  uuid not null,
    title       text not null check (char_length(title) between 1 and 200),
    description text not null default '' check (char_length(description) <= 10000),
    status      text not null default 'todo' check (status in ('todo', 'doing', 'done')),
    -- A member of the task's organization; removing the member unassigns their tasks.
    assignee_id uuid,
    due_date    date,
    created_by  uuid references users (id) on delete set null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint tasks_project_fkey foreign key (org_id, project_id)
        references projects (org_id, id),
    constraint tasks_assignee_fkey foreign key (org_id, assignee_id)
        references memberships (org_id, user_id) on delete set null (assignee_id)
);
-- The task list of a project, plain and filtered by status or assignee, keyset on the id.
create index tasks_project_idx on tasks (project_id, id);
create index tasks_project_status_idx on tasks (project_id, status, id);
create index tasks_project_assignee_idx on tasks (project_id, assignee_id, id);
-- The references' own indexes: (org_id, project_id) also serves the batched deletion of an
-- organization's tasks; (org_id, assignee_id) the unassigning of a removed member.
create index tasks_org_project_idx on tasks (org_id, project_id);
create index tasks_org_assignee_idx on tasks (org_id, assignee_id);
create index tasks_created_by_idx on tasks (created_by);

create table comments (
    id         uuid primary key,
    org_id     uuid not null references organizations (id),
    task_id    uuid not null references tasks (id),
    author_id  uuid references users (id) on delete set null,
    body       text not null check (char_length(body) between 1 and 10000),
    created_at timestamptz not null default now()
);
-- A task's comments in order, and its comment count (one index-only count per listed task).
create index comments_task_idx on comments (task_id, id);
create index comments_org_idx on comments (org_id);
create index comments_author_idx on comments (author_id);

-- The activity log: one row per change to a project, task, comment or membership, written
-- in the change's own transaction. The product's high-volume table: append-only, read
-- newest first per organization through (org_id, id), and deleted only with its
-- organization. The actor is a plain column (no reference): the log keeps who did it, and
-- deleting an account does not rewrite millions of log rows.
create table events (
    id           uuid not null,
    org_id       uuid not null references organizations (id),
    actor_id     uuid,
    kind         text not null,
    subject_id   uuid not null,
    payload      jsonb not null default '{}',
    created_at   timestamptz not null default now(),
    -- The key leads with the tenant: with an index on the id alone, the planner would read
    -- a feed by scanning every tenant's newest events backwards, filtering (the rows of one
    -- large, old tenant sit behind millions of others'); this one is the feed's order.
    primary key (org_id, id)
);

-- Files may belong to an organization: its members read them, its admins delete them.
-- Expand-only: a nullable column, so instances of the previous version keep working.
alter table files add column org_id uuid references organizations (id);
create index files_org_listing_idx on files (org_id, id desc) where org_id is not null;

-- The avatar reference predates the rule that every foreign key leads an index: deleting a
-- file would scan users for it.
create index users_avatar_file_idx on users (avatar_file_id);
