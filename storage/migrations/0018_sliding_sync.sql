-- Simplified sliding sync (MSC4186) connections: one row per (user,
-- device, conn_id); each response a client may continue from is a row of
-- sliding_sync_positions holding what the connection had been sent by then
-- (JSON, per room: stream position, membership, room config). The pos token
-- names a position row. Only the newest few positions of a connection are
-- kept, idle connections expire.
CREATE TABLE sliding_sync_connections (
    conn_key     SERIAL_PK,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    conn_id      TEXT NOT NULL,
    last_used_ts BIGINT NOT NULL,
    UNIQUE (user_id, device_id, conn_id)
);
CREATE INDEX sliding_sync_connections_used ON sliding_sync_connections (last_used_ts);

CREATE TABLE sliding_sync_positions (
    pos_id     SERIAL_PK,
    conn_key   BIGINT NOT NULL,
    created_ts BIGINT NOT NULL,
    state      TEXT NOT NULL
);
CREATE INDEX sliding_sync_positions_conn ON sliding_sync_positions (conn_key, pos_id);
