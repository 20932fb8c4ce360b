-- Notifications stored per rule group instead of per recipient
-- (docs/performance.md, "Push in big rooms"). Members whose push rules are
-- the same (most users: the server defaults) get one evaluation and one row
-- per event; only a recipient whose outcome differs from their group's (a
-- mention, a keyword, an invite, a thread subscription) gets a row of their
-- own in notifications.

-- One row per event and rule group whose rules notify for it. group_id is
-- a hash of the group's stored rules; the sender is never notified, so it
-- is kept to leave the sender's own events out.
CREATE TABLE push_actions (
    room_id    TEXT NOT NULL,
    group_id   BIGINT NOT NULL,
    stream_pos BIGINT NOT NULL,
    event_id   TEXT NOT NULL,
    thread_id  TEXT NOT NULL,                 -- 'main' or the thread root's event ID
    sender     TEXT NOT NULL,
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,                 -- the matching rule's actions, JSON
    ts         BIGINT NOT NULL,
    PRIMARY KEY (room_id, group_id, stream_pos)
);

-- Which group a local member's notifications in a room come from, over a
-- range of stream positions (since_pos, until_pos]; until_pos is NULL
-- while the member is joined with those rules. A new range starts when the
-- member joins or changes push rules, and ends when they leave.
CREATE TABLE push_epochs (
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    since_pos  BIGINT NOT NULL,
    until_pos  BIGINT,
    group_id   BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, since_pos)
);
CREATE INDEX push_epochs_open ON push_epochs (room_id, user_id) WHERE until_pos IS NULL;

-- notifications now holds a recipient's own outcome where it differs from
-- their group's: notify and highlight are theirs, group_notify and
-- group_highlight what their group's row counted for them (both false when
-- they were in no group's range, e.g. an invite). Rows from before keep
-- their meaning: notified, in no group's range.
ALTER TABLE notifications ADD COLUMN notify BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE notifications ADD COLUMN group_notify BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE notifications ADD COLUMN group_highlight BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX notifications_user_pos ON notifications (user_id, stream_pos);

-- What rotation (push/rotate.go) took out of the rows above: a member's
-- unread notifications at positions up to upto_pos that were not
-- highlights, counted with the receipts they had then (read_pos
-- unthreaded, thread_read_pos in the thread; 0 for none). It counts while
-- those receipts are unchanged; a newer receipt reads it.
CREATE TABLE push_summaries (
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    notif           BIGINT NOT NULL,
    highlight       BIGINT NOT NULL,
    upto_pos        BIGINT NOT NULL,
    read_pos        BIGINT NOT NULL,
    thread_read_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
