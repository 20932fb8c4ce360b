-- The built-in OAuth 2.0 authorization server (client-server API, OAuth 2.0
-- API). Its access and refresh tokens are the ordinary ones of
-- access_tokens and refresh_tokens; these tables hold what surrounds them.

-- Dynamically registered clients (RFC 7591): the validated metadata as JSON.
CREATE TABLE oauth_clients (
    client_id  TEXT PRIMARY KEY,
    metadata   TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- An authorization request while the user signs in and consents in the
-- browser, then the code it produced. Codes are stored hashed, single use.
CREATE TABLE oauth_auth_requests (
    request_id      TEXT PRIMARY KEY,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    scope           TEXT NOT NULL,
    device_id       TEXT NOT NULL,
    state           TEXT NOT NULL,
    response_mode   TEXT NOT NULL,
    code_challenge  TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    created_ts      BIGINT NOT NULL,
    expires_ts      BIGINT NOT NULL,
    user_id         TEXT,                      -- set when consented
    code_hash       BYTES UNIQUE,
    code_expires_ts BIGINT,
    code_used       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX oauth_auth_requests_expiry ON oauth_auth_requests (expires_ts);

-- A signed-in browser of the account pages (cookie value stored hashed).
CREATE TABLE oauth_browser_sessions (
    session_hash BYTES PRIMARY KEY,
    user_id      TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    expires_ts   BIGINT NOT NULL
);
CREATE INDEX oauth_browser_sessions_user ON oauth_browser_sessions (user_id);

-- Which client a device was granted to, with the scope granted.
CREATE TABLE oauth_sessions (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Refresh tokens whose generation has been replaced: presenting one again
-- is reuse, and ends the session (RFC 9700 section 4.14.2).
CREATE TABLE spent_refresh_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    spent_ts   BIGINT NOT NULL
);
CREATE INDEX spent_refresh_tokens_device ON spent_refresh_tokens (user_id, device_id);

-- Device authorization grants (RFC 8628): the device code hashed, the
-- user code as typed (short, upper case, rate limited when entered).
CREATE TABLE oauth_device_grants (
    device_code_hash BYTES PRIMARY KEY,
    user_code        TEXT NOT NULL UNIQUE,
    client_id        TEXT NOT NULL,
    scope            TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    created_ts       BIGINT NOT NULL,
    expires_ts       BIGINT NOT NULL,
    status           TEXT NOT NULL,            -- pending, approved, denied, done
    user_id          TEXT,
    last_poll_ts     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX oauth_device_grants_expiry ON oauth_device_grants (expires_ts);

-- A cross-signing reset the user approved on the account page, for the
-- m.oauth UIA stage of /keys/device_signing/upload: one upload, until
-- approved_until_ts.
CREATE TABLE oauth_cross_signing_resets (
    user_id           TEXT PRIMARY KEY,
    approved_until_ts BIGINT NOT NULL
);
