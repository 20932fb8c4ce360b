-- Account suspension (client-server API, Account suspension, v1.13;
-- PUT /v1/admin/suspend, v1.18): a suspended account keeps working for
-- reading, leaving, redacting its own events, keys and logging out, but
-- joining, inviting, sending and changing its profile are refused with 403
-- M_USER_SUSPENDED.
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;
