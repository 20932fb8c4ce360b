-- Rendezvous sessions for sign-in with QR (MSC4388): one small payload
-- that two devices take turns replacing, guarded by a sequence token.
-- In the database so that processes sharing it serve the same session.
CREATE TABLE rendezvous_sessions (
    rendezvous_id  TEXT PRIMARY KEY,
    data           TEXT NOT NULL,
    sequence_token TEXT NOT NULL,
    expires_ts     BIGINT NOT NULL
);
CREATE INDEX rendezvous_sessions_expiry ON rendezvous_sessions (expires_ts);
