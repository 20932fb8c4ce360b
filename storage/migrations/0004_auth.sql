-- Authentication: user-interactive auth sessions, refresh tokens, login
-- tokens and registration tokens (client-server API, Client Authentication).

-- A UIA session lives in the database so that any process sharing it can
-- continue a session another one started.
CREATE TABLE uia_sessions (
    session_id         TEXT PRIMARY KEY,
    action             TEXT NOT NULL,          -- the endpoint the session authorises, e.g. "POST /register"
    user_id            TEXT NOT NULL,          -- the caller; empty for /register
    flows              TEXT NOT NULL,          -- JSON [[stage,...],...]
    params             TEXT NOT NULL,          -- JSON object
    registration_token TEXT,                   -- held (counted as pending) once that stage is done
    created_ts         BIGINT NOT NULL,
    expires_ts         BIGINT NOT NULL
);
CREATE INDEX uia_sessions_expiry ON uia_sessions (expires_ts);

-- One row per completed stage; inserting is idempotent, so concurrent
-- requests of one session need no read-modify-write.
CREATE TABLE uia_stages (
    session_id TEXT NOT NULL,
    stage      TEXT NOT NULL,
    PRIMARY KEY (session_id, stage)
);

-- Refresh tokens, hashed like access tokens. prev_hash is the token this one
-- replaced: it stays valid until this generation is first used.
CREATE TABLE refresh_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    prev_hash  BYTES,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);

-- refresh_hash: the refresh token issued together with this access token.
-- prev_refresh_hash: the refresh token exchanged for it, revoked (with its
-- access tokens) the first time this access token is used.
ALTER TABLE access_tokens ADD COLUMN refresh_hash BYTES;
ALTER TABLE access_tokens ADD COLUMN prev_refresh_hash BYTES;

-- Short-lived single-use tokens for m.login.token (POST /login/get_token).
CREATE TABLE login_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- Registration tokens with Synapse's admin API semantics: a token is valid
-- while (uses_allowed IS NULL OR pending + completed < uses_allowed) and it
-- has not expired. pending counts UIA sessions that passed the token stage
-- but have not registered yet.
CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed BIGINT,                        -- NULL: unlimited
    pending      BIGINT NOT NULL DEFAULT 0,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_time  BIGINT                         -- ms since epoch; NULL: never
);
