-- Push notifications (client-server API, Push Notifications; Push Gateway API).

-- One row per (user, event) that the user's push rules marked notify.
-- Whether it is read is not stored: a read receipt covers every event up to
-- its own, so "read" follows from the user's receipts and a receipt never
-- rewrites notification rows.
CREATE TABLE notifications (
    id         SERIAL_PK,
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    thread_id  TEXT NOT NULL,                 -- 'main' or the thread root's event ID
    highlight  BOOLEAN NOT NULL,
    actions    TEXT NOT NULL,                 -- the matching rule's actions, JSON
    ts         BIGINT NOT NULL,
    UNIQUE (user_id, event_id)
);
CREATE INDEX notifications_user_room ON notifications (user_id, room_id, stream_pos);

-- Pushers (POST /pushers/set), each tied to the device whose access token
-- set it. app_id + pushkey is unique per user.
CREATE TABLE pushers (
    id                  SERIAL_PK,
    user_id             TEXT NOT NULL,
    device_id           TEXT NOT NULL,
    kind                TEXT NOT NULL,
    app_id              TEXT NOT NULL,
    pushkey             TEXT NOT NULL,
    pushkey_ts          BIGINT NOT NULL,
    app_display_name    TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag         TEXT NOT NULL,
    lang                TEXT NOT NULL,
    data                TEXT NOT NULL,        -- the data object, JSON
    sent_id             BIGINT NOT NULL,      -- push_queue id delivered up to
    UNIQUE (user_id, app_id, pushkey)
);
CREATE INDEX pushers_app_key ON pushers (app_id, pushkey);
CREATE INDEX pushers_device ON pushers (user_id, device_id);

-- What is still to be sent to a user's gateways: one row per notification
-- (or badge update) per user, whatever the number of pushers; each pusher
-- delivers the rows after its sent_id in id order and moves sent_id, and
-- rows every pusher of the user has delivered are deleted.
CREATE TABLE push_queue (
    id         SERIAL_PK,
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,                 -- '' for a badge-only update
    stream_pos BIGINT NOT NULL,               -- the event's position; 0 for a badge update
    thread_id  TEXT NOT NULL,
    body       TEXT NOT NULL,                 -- the notification, without devices, JSON
    actions    TEXT NOT NULL,                 -- the matching rule's actions (the tweaks), JSON
    not_before BIGINT NOT NULL                -- held until this time (ms), push_hold_seconds
);
CREATE INDEX push_queue_user ON push_queue (user_id, id);

-- The unread count last queued to each user's gateways, so a receipt that
-- lowers it queues a badge update.
CREATE TABLE push_badges (
    user_id TEXT PRIMARY KEY,
    badge   BIGINT NOT NULL
);

-- The last event stream position whose notifications were recorded, so a
-- restart evaluates what a crash left out.
CREATE TABLE push_progress (
    id         INTEGER PRIMARY KEY,
    stream_pos BIGINT NOT NULL
);
