-- The room event core: events, state snapshots, current state, extremities.

CREATE TABLE rooms (
    room_id          TEXT PRIMARY KEY,
    room_version     TEXT NOT NULL,
    -- JSON array of the forward extremities' event IDs.
    extremities      TEXT NOT NULL DEFAULT '[]',
    max_depth        BIGINT NOT NULL DEFAULT 0,
    -- Snapshot of the current (resolved) state.
    current_snapshot BIGINT NOT NULL DEFAULT 0,
    published        BOOLEAN NOT NULL DEFAULT FALSE,  -- in the public room directory
    created_ts       BIGINT NOT NULL
);

-- stream_pos is the global order in which events were persisted: sync and
-- federation read by it. (depth, stream_pos) is the topological order used by
-- /messages.
CREATE TABLE events (
    stream_pos       SERIAL_PK,
    event_id         TEXT NOT NULL UNIQUE,
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,                          -- NULL: not a state event
    sender           TEXT NOT NULL,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    membership       TEXT,                          -- content.membership of m.room.member
    snapshot_before  BIGINT NOT NULL,               -- state before the event
    snapshot_after   BIGINT NOT NULL,               -- state after (= before for non-state)
    rejected         BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed      BOOLEAN NOT NULL DEFAULT FALSE,
    outlier          BOOLEAN NOT NULL DEFAULT FALSE,
    redacted_by      TEXT,                          -- event ID of the redaction applied
    relates_to       TEXT,                          -- content.m.relates_to.event_id
    rel_type         TEXT,
    prev_content     TEXT,                          -- content of the state this replaced (unsigned.prev_content)
    prev_sender      TEXT,
    replaces_state   TEXT,
    sender_device    TEXT,                          -- local sends: the device, for unsigned.transaction_id
    txn_id           TEXT,
    json             TEXT NOT NULL                  -- the PDU, canonical JSON
);
CREATE INDEX events_room_stream ON events (room_id, stream_pos);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos);
CREATE INDEX events_relates ON events (relates_to, rel_type);

-- State snapshots are deltas against a parent snapshot with a bounded chain
-- length; a snapshot with no parent holds the full state. A state event
-- costs one row, not a copy of the room's state.
CREATE TABLE state_snapshots (
    snapshot_id SERIAL_PK,
    room_id     TEXT NOT NULL,
    parent_id   BIGINT,
    chain_len   INTEGER NOT NULL
);
CREATE TABLE state_snapshot_entries (
    snapshot_id BIGINT NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, type, state_key)
);

-- Current state, materialised for membership and directory queries.
CREATE TABLE current_state (
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (state_key, type, membership);

-- Transaction IDs of client requests, per device and endpoint scope
-- (client-server API, Transaction identifiers): a retry returns the first
-- result instead of acting twice.
CREATE TABLE client_txns (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,                   -- the endpoint and its path parameters
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, scope, txn_id)
);

-- Rooms a user has forgotten (POST /rooms/{roomId}/forget).
CREATE TABLE forgotten_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
