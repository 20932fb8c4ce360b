-- Account suspension (client-server API, Account suspension, v1.13;
-- PUT /v1/admin/suspend, v1.18): a suspended account keeps working for
-- reading, leaving, redacting its own events, keys and logging out, but
-- joining, inviting, sending and changing its profile are refused with 403
-- M_USER_SUSPENDED.
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;

-- Application services' ephemeral data (Application Service API, Pushing
-- ephemeral data, v1.13). receipt_pos: every receipt up to it was sent to
-- the service or is of no interest (existing services start at the
-- newest). txn_ephemeral: the ephemeral array of the transaction in
-- flight, resent as it is on retries, and txn_receipt_pos the receipt
-- position it reaches. A transaction is in flight while txn_events or
-- txn_ephemeral is not empty.
ALTER TABLE appservice_streams ADD COLUMN receipt_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_streams ADD COLUMN txn_receipt_pos BIGINT NOT NULL DEFAULT 0;
ALTER TABLE appservice_streams ADD COLUMN txn_ephemeral TEXT NOT NULL DEFAULT '[]';
UPDATE appservice_streams SET receipt_pos = (SELECT COALESCE(MAX(stream_pos), 0) FROM receipts),
    txn_receipt_pos = (SELECT COALESCE(MAX(stream_pos), 0) FROM receipts);
