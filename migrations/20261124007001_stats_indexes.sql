-- The organization dashboard (GET /orgs/{id}/stats) reads only indexes: each part of its one
-- statement is a range scan that starts at the tenant and never visits the tasks' heap.
--
-- Tasks per (project, status): (org_id, project_id, status) answers the grouping from the
-- index alone. It leads with (org_id, project_id), so it also serves what the index it
-- replaces served: the tasks' reference to their project and the batched deletion of an
-- organization's tasks.
create index tasks_org_project_status_idx on tasks (org_id, project_id, status);
drop index tasks_org_project_idx;

-- Open tasks per assignee: only the tasks not done, by assignee, from the index alone (the
-- partial index's condition is the query's). Done tasks, the bulk of an old tenant's, are not
-- in it at all.
create index tasks_org_open_assignee_idx on tasks (org_id, assignee_id) where status <> 'done';
