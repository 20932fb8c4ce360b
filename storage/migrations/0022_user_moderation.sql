-- User moderation (client-server API): reports of users and account
-- locks.
--
-- User reports (Reporting content, POST /users/{userId}/report, v1.14):
-- reports of a user rather than of a room or an event, for server admins
-- to review. content_reports requires a room, so they have their own
-- table.
CREATE TABLE user_reports (
    report_id   SERIAL_PK,
    user_id     TEXT NOT NULL,      -- the reported user
    reporter    TEXT NOT NULL,
    reason      TEXT NOT NULL,      -- may be blank
    received_ts BIGINT NOT NULL
);
CREATE INDEX user_reports_user ON user_reports (user_id);

-- Account locking (Account moderation, v1.12; PUT /v1/admin/lock, v1.18):
-- a locked account keeps its tokens but every request except logout is
-- refused with 401 M_USER_LOCKED.
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
