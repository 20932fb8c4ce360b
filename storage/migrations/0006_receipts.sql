-- Read receipts (client-server API, Receipts). One row per (room, user,
-- type, thread); a new receipt replaces the row and takes a new stream
-- position, so sync reads "receipts changed after N" with one range scan.
CREATE TABLE receipts (
    stream_pos   SERIAL_PK,
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL DEFAULT '',   -- '' for an unthreaded receipt
    event_id     TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    UNIQUE (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_room_pos ON receipts (room_id, stream_pos);
