-- Invites to rooms on other servers that this server is not in yet: the
-- stripped state the inviting server sent, shown in sync's invite section.
CREATE TABLE remote_invites (
    room_id        TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    stripped_state TEXT NOT NULL,    -- JSON array of stripped state events
    PRIMARY KEY (room_id, user_id)
);
