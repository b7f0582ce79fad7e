-- The password's version: bumped by every password change (accounts::repo::set_password).
-- A session remembers the version it was made under; one made under an older version (any
-- session from before a change, including one whose login was still checking the old password
-- when the change committed) is no longer accepted. Existing sessions carry no version and
-- count as version 1, the version every existing account starts at.
alter table users add column password_version bigint not null default 1;
