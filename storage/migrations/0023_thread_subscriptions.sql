-- Thread subscriptions (MSC4306) and their stream for the sliding sync
-- extension (MSC4308). One row per (user, room, thread root); like
-- account_data, a change deletes the row and inserts it anew so it moves to
-- a new stream_pos, and "what changed after N" is one index range scan.
-- An unsubscription keeps the row (subscribed false) so incremental syncs
-- can say so, and remembers the events stream position it was made at:
-- an automatic subscription caused by an event at or before that position
-- is refused (MSC4306, server-side automatic subscription ordering).
CREATE TABLE thread_subscriptions (
    stream_pos      SERIAL_PK,
    user_id         TEXT NOT NULL,
    room_id         TEXT NOT NULL,
    thread_id       TEXT NOT NULL,   -- the thread root's event ID
    subscribed      BOOLEAN NOT NULL,
    automatic       BOOLEAN NOT NULL,
    unsubscribed_at BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_id, room_id, thread_id)
);
CREATE INDEX thread_subscriptions_user_pos ON thread_subscriptions (user_id, stream_pos);
