-- An avatar whose image cannot be decoded ends 'failed' (the profile says so; uploading another
-- replaces it) instead of staying 'pending' forever. Widening a check is backward compatible:
-- instances of the previous version never write the new value.
alter table users drop constraint users_avatar_status_check;
alter table users add constraint users_avatar_status_check
    check (avatar_status in ('pending', 'ready', 'failed'));
