-- Delayed events (MSC4140): an event a user asked to have sent later. The
-- scheduler on the leading process sends it through the room core when
-- send_ts passes (or at once on the send action). status is scheduled,
-- sending (claimed; a claim left by a process that died is taken again,
-- the send being idempotent through client_txns with scope "delayed" and
-- the delay_id as transaction ID), sent, cancelled or failed. Finalised
-- rows (finalised_ts set) are kept for a week for lookups.
CREATE TABLE delayed_events (
    delay_id     TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    -- the scheduling request's transaction (send endpoint only), so that
    -- a retry answers the same delay_id
    txn          TEXT,
    room_id      TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    state_key    TEXT,
    content      TEXT NOT NULL,
    delay_ms     BIGINT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    send_ts      BIGINT NOT NULL,
    status       TEXT NOT NULL,
    claimed_ts   BIGINT,
    event_id     TEXT,
    error        TEXT,
    finalised_ts BIGINT
);
CREATE UNIQUE INDEX delayed_events_txn ON delayed_events (user_id, device_id, txn);
CREATE INDEX delayed_events_due ON delayed_events (status, send_ts);
CREATE INDEX delayed_events_user ON delayed_events (user_id, status, send_ts);
CREATE INDEX delayed_events_state ON delayed_events (room_id, event_type, state_key, status);
CREATE INDEX delayed_events_finalised ON delayed_events (finalised_ts);
