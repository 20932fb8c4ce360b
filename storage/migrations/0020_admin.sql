-- Synapse-compatible admin API (issue 17).

-- Rooms an admin blocked: no local user may join, be invited or knock.
-- A room may be blocked before this server knows it.
CREATE TABLE blocked_rooms (
    room_id    TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- Room deletions (DELETE /_synapse/admin/v2/rooms/{roomId}). The row is
-- written with the block in one transaction before the request returns;
-- the work (each local member leaves through the room core) is resumed
-- after a restart until status is complete or failed.
CREATE TABLE room_deletions (
    delete_id    TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    requester    TEXT NOT NULL,
    block        BOOLEAN NOT NULL,
    purge        BOOLEAN NOT NULL,
    status       TEXT NOT NULL,          -- scheduled, active, complete, failed
    error        TEXT,
    kicked_users TEXT NOT NULL DEFAULT '[]',  -- JSON arrays of user IDs
    failed_users TEXT NOT NULL DEFAULT '[]',
    aliases      TEXT NOT NULL DEFAULT '[]',  -- local aliases removed
    created_ts   BIGINT NOT NULL,
    finished_ts  BIGINT
);
CREATE INDEX room_deletions_room ON room_deletions (room_id);
CREATE INDEX room_deletions_status ON room_deletions (status);

-- Set when a deactivation asked for erasure (GDPR): the admin API reports it.
ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT FALSE;
