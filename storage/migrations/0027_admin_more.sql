-- More of the Synapse-compatible admin API (issue 17).

-- Shadow-banned users (POST /_synapse/admin/v1/users/{userId}/shadow_ban):
-- their sends, state changes and invites answer as if they succeeded, but
-- nothing reaches the room.
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;

-- Per-user message rate limits (/_synapse/admin/v1/users/{userId}/override_ratelimit);
-- 0 and 0 mean no limit.
CREATE TABLE ratelimit_overrides (
    user_id             TEXT PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count         BIGINT NOT NULL
);

-- Media safe from quarantine and from deletion by date or size
-- (POST /_synapse/admin/v1/media/protect/{mediaId}).
ALTER TABLE media ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE;

-- Destinations the federation sender failed to reach: when it first
-- failed (this run of failures), when it last tried and how long it waits
-- before the next try. The row goes when a send succeeds or an admin
-- resets the connection (/_synapse/admin/v1/federation/destinations).
CREATE TABLE federation_destinations (
    destination    TEXT PRIMARY KEY,
    failure_ts     BIGINT NOT NULL,
    retry_last_ts  BIGINT NOT NULL,
    retry_interval BIGINT NOT NULL
);

-- Background work the admin API starts (redacting a user's events,
-- purging a room's history): written before the request returns,
-- resumed after a restart until complete or failed, and listed by
-- /_synapse/admin/v1/scheduled_tasks. Every step can be done twice.
CREATE TABLE admin_tasks (
    task_id     TEXT PRIMARY KEY,
    action      TEXT NOT NULL,           -- redact_all_events, purge_history
    resource_id TEXT NOT NULL,           -- the user or room
    params      TEXT NOT NULL,           -- JSON
    status      TEXT NOT NULL,           -- scheduled, active, complete, failed
    result      TEXT NOT NULL DEFAULT '{}',
    error       TEXT,
    created_ts  BIGINT NOT NULL,
    updated_ts  BIGINT NOT NULL
);
CREATE INDEX admin_tasks_status ON admin_tasks (status);

-- Until when a user may replace their master cross-signing key without
-- user-interactive auth (POST /_synapse/admin/v1/users/{userId}/_allow_cross_signing_replacement_without_uia).
CREATE TABLE cross_signing_replacement (
    user_id  TEXT PRIMARY KEY,
    until_ts BIGINT NOT NULL
);

-- Every change of a media item's quarantine, in order, for
-- GET /_synapse/admin/v1/media/quarantine_changes (tools that mirror
-- quarantines follow it).
CREATE TABLE media_quarantine_changes (
    stream_id   SERIAL_PK,
    server_name TEXT NOT NULL,
    media_id    TEXT NOT NULL,
    quarantined BOOLEAN NOT NULL
);
