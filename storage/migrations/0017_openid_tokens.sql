-- OpenID tokens (client-server API, OpenID): handed by a user to a third
-- party (a widget, the MatrixRTC authorization service), which exchanges
-- one for the user's ID at federation /openid/userinfo. Stored hashed like
-- every token; they authenticate nothing else.
CREATE TABLE openid_tokens (
    token_hash BYTES PRIMARY KEY,
    user_id    TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);
