-- Each user's server notices room (client-server API, Server Notices),
-- created on the first notice sent to them.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
