-- Content reports (client-server API, Reporting content): reports of
-- events and of whole rooms, for server admins to review.
CREATE TABLE content_reports (
    report_id   SERIAL_PK,
    room_id     TEXT NOT NULL,
    event_id    TEXT,               -- NULL: the report is about the room
    reporter    TEXT NOT NULL,
    reason      TEXT,
    score       INTEGER,
    received_ts BIGINT NOT NULL
);
CREATE INDEX content_reports_room ON content_reports (room_id);

-- Thread listing reads (room_id, rel_type) and orders by stream position.
CREATE INDEX events_room_rel ON events (room_id, rel_type, stream_pos);
-- /timestamp_to_event.
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);
