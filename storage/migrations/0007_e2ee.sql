-- End-to-end encryption: device keys, one-time and fallback keys,
-- cross-signing keys and signatures, the device-list stream, to-device
-- inboxes and server-side key backups.

-- A device's identity keys as uploaded (signatures included, unsigned not).
CREATE TABLE device_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys are handed out in upload order (id) and deleted when claimed.
CREATE TABLE one_time_keys (
    id        SERIAL_PK,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    UNIQUE (user_id, device_id, algorithm, key_id)
);
CREATE INDEX one_time_keys_claim ON one_time_keys (user_id, device_id, algorithm, id);

-- At most one fallback key per device and algorithm; used once handed out.
CREATE TABLE fallback_keys (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id    TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    used      BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- A user's cross-signing keys (key_type: master, self_signing, user_signing),
-- stored without signatures: those live in key_signatures.
CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_id   TEXT NOT NULL,                 -- the unpadded base64 public key
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures of device keys and cross-signing keys, by any key of any user.
-- target_key_id is a device ID or a cross-signing public key; signer_key_id
-- is "ed25519:<device ID or public key>".
CREATE TABLE key_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id  TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id  TEXT NOT NULL,
    signature      TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- One row each time a user's devices or keys change; sync and /keys/changes
-- read it by position.
CREATE TABLE device_list_stream (
    position SERIAL_PK,
    user_id  TEXT NOT NULL
);
CREATE INDEX device_list_stream_user ON device_list_stream (user_id, position);

-- Per-device to-device inbox, kept until a later sync acknowledges it.
CREATE TABLE to_device_inbox (
    position  SERIAL_PK,
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sender    TEXT NOT NULL,
    type      TEXT NOT NULL,
    content   TEXT NOT NULL
);
CREATE INDEX to_device_inbox_device ON to_device_inbox (user_id, device_id, position);

-- Server-side key backups (room_keys). Versions count up per user and are
-- never reused; a deleted version is kept as a tombstone so deleting it again
-- succeeds.
CREATE TABLE key_backup_versions (
    user_id   TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE key_backup_sessions (
    user_id             TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- The newest committed position of the to-device and device-list streams,
-- written in the transaction that appends, so a reader never sees a head
-- whose row is not yet visible (sequences are not transactional), and the
-- head does not go back when delivered messages are deleted.
CREATE TABLE stream_heads (
    stream   TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO stream_heads (stream, position) VALUES ('to_device', 0);
INSERT INTO stream_heads (stream, position) VALUES ('device_lists', 0);
