-- Accounts, devices and access tokens (client-server API, Client Authentication).
CREATE TABLE users (
    user_id       TEXT PRIMARY KEY,            -- full Matrix ID, @localpart:server
    localpart     TEXT NOT NULL UNIQUE,
    password_hash TEXT,                        -- bcrypt; NULL: no password login
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    user_type     TEXT,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_ts   BIGINT NOT NULL,
    last_seen_ts BIGINT,
    last_seen_ip TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- Tokens are stored as SHA-256 hashes: a leaked database gives no usable token.
CREATE TABLE access_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT                          -- NULL: never expires
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY,
    displayname TEXT,
    avatar_url  TEXT
);
