-- Rooms joined with partial state (MSC3902): the send_join answer left the
-- member events out, and the full state is being fetched in the background.
-- The row is written with the join and survives a restart, which resumes
-- the resync; completed_pos is set (and the row kept) when the state is
-- complete: the event stream position from which eager syncs show the room.
CREATE TABLE partial_state_rooms (
    room_id       TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    -- JSON list: the resident server first, then servers_in_room.
    servers       TEXT NOT NULL,
    created_ts    BIGINT NOT NULL,
    completed_pos BIGINT
);
CREATE INDEX partial_state_rooms_completed ON partial_state_rooms (completed_pos);
