-- Third-party identifiers (client-server API, Adding Account
-- Administrative Contact Information): email addresses bound to accounts,
-- and the validation sessions that prove a user controls an address
-- (requestToken, the link in the email, then an m.login.email.identity
-- stage or /account/3pid/add).
CREATE TABLE user_threepids (
    medium       TEXT NOT NULL,
    address      TEXT NOT NULL,     -- lower case for email
    user_id      TEXT NOT NULL,
    validated_ts BIGINT NOT NULL,
    added_ts     BIGINT NOT NULL,
    PRIMARY KEY (medium, address)   -- one account per address
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

-- One session per (client_secret, medium, address, purpose); the token
-- mailed to the address and the client secret are stored hashed.
CREATE TABLE threepid_sessions (
    session_id         TEXT PRIMARY KEY,
    client_secret_hash BYTES NOT NULL,
    medium             TEXT NOT NULL,
    address            TEXT NOT NULL,
    purpose            TEXT NOT NULL,  -- register, add, password
    send_attempt       BIGINT NOT NULL,
    token_hash         BYTES NOT NULL,
    token_expires_ts   BIGINT NOT NULL,
    next_link          TEXT NOT NULL,
    validated_ts       BIGINT NOT NULL DEFAULT 0, -- 0: not yet
    uia_session        TEXT NOT NULL DEFAULT '',  -- the UIA session it completed a stage of
    expires_ts         BIGINT NOT NULL
);
CREATE UNIQUE INDEX threepid_sessions_secret ON threepid_sessions (client_secret_hash, medium, address, purpose);
CREATE INDEX threepid_sessions_uia ON threepid_sessions (uia_session);
