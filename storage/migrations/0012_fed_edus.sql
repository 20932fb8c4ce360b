-- Other servers' users' devices and cross-signing keys, as their servers
-- told us through m.device_list_update and m.signing_key_update EDUs and
-- GET /user/devices. A user with a remote_device_lists row has a complete
-- list that updates keep current; without one, /keys/query asks their
-- server. The rows are dropped when no local user shares a room with the
-- user any more (their server stops sending updates then).
CREATE TABLE remote_device_lists (
    user_id   TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL                -- the last update applied
);

CREATE TABLE remote_device_keys (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT NOT NULL DEFAULT '',
    key_json     TEXT NOT NULL DEFAULT '',   -- as received, signatures included; '' when none
    PRIMARY KEY (user_id, device_id)
);

CREATE TABLE remote_cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,                  -- master, self_signing
    key_json TEXT NOT NULL,                  -- as received, signatures included
    PRIMARY KEY (user_id, key_type)
);
