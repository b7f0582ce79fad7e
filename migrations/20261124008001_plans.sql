-- The plan catalog: the pricing tiers the product sells, read anonymously (GET /api/v1/plans)
-- and cached at the edge. Changed by migrations (or an operator), never by the API.
create table plans (
    -- A stable, URL-friendly key clients can branch on.
    id                  text primary key check (id ~ '^[a-z0-9][a-z0-9-]{0,38}[a-z0-9]$'),
    name                text not null check (char_length(name) between 1 and 100),
    description         text not null default '' check (char_length(description) <= 500),
    -- Per month, in the currency's minor unit (cents): exact, no floating point.
    monthly_price_cents integer not null check (monthly_price_cents >= 0),
    currency            text not null default 'USD' check (currency ~ '^[A-Z]{3}$'),
    -- Limits; null means no limit.
    max_members         integer check (max_members > 0),
    max_projects        integer check (max_projects > 0),
    storage_bytes       bigint check (storage_bytes > 0),
    features            text[] not null default '{}',
    -- The catalog's order, cheapest first.
    position            smallint not null,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint plans_position_key unique (position)
);

insert into plans (id, name, description, monthly_price_cents, max_members, max_projects,
                   storage_bytes, features, position)
values
    ('free', 'Free', 'For a small team trying things out.', 0, 3, 3, 1073741824,
     array['Unlimited tasks', 'Comments and activity feed', 'Community support'], 1),
    ('team', 'Team', 'For teams that plan their work together every day.', 1200, 25, 50,
     107374182400,
     array['Everything in Free', 'Invitations with roles', 'File attachments up to 100 MiB',
           'Email support'], 2),
    ('business', 'Business', 'For organizations with many teams and stricter needs.', 4900,
     250, null, 1099511627776,
     array['Everything in Team', 'Unlimited projects', 'Audit log export',
           'Priority support with a 4-hour response'], 3),
    ('enterprise', 'Enterprise', 'For companies that need their own terms and limits.', 0,
     null, null, null,
     array['Everything in Business', 'Single sign-on', 'A dedicated support engineer',
           'Custom contract and invoicing'], 4);
