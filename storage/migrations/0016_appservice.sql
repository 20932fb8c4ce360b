-- Each application service's push progress (Application Service API,
-- Pushing events). Every event up to delivered_pos was sent to the service
-- or is of no interest to it. When txn_events (a JSON array of event IDs)
-- is not empty, transaction txn_id carrying those events, the interesting
-- ones up to txn_to_pos, is in flight: it is retried as it is, same ID,
-- same events, until the service accepts it. The events table itself is
-- the queue, so nothing committed is lost by a crash or restart.
CREATE TABLE appservice_streams (
    as_id TEXT PRIMARY KEY,
    delivered_pos BIGINT NOT NULL,
    txn_id BIGINT NOT NULL,
    txn_to_pos BIGINT NOT NULL,
    txn_events TEXT NOT NULL
);
