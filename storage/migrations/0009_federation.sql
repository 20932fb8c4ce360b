-- Federation (server-server API).

-- Other servers' verify keys, as fetched and checked by the key ring.
-- expired_ts is 0 for a current key; valid_until_ts is 0 for an old one.
CREATE TABLE server_keys (
    server_name    TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    verify_key     TEXT NOT NULL,           -- unpadded base64
    valid_until_ts BIGINT NOT NULL,
    expired_ts     BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- The signed /_matrix/key/v2/server responses of other servers, kept
-- whole so that the notary endpoint can hand them on with their
-- signatures. One row per server: the newest response.
CREATE TABLE server_key_responses (
    server_name    TEXT PRIMARY KEY,
    valid_until_ts BIGINT NOT NULL,
    response       TEXT NOT NULL
);

-- Inbound transactions already processed, with the response sent, so a
-- repeated PUT /send/{txnId} gets the same answer without reprocessing.
CREATE TABLE federation_inbound_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    response    TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);

-- The durable outbound queue: PDUs (by event ID) and EDUs waiting to be
-- sent to each destination, in id order. A row is deleted when a
-- transaction holding it was accepted.
CREATE TABLE federation_queue_pdus (
    id          SERIAL_PK,
    destination TEXT NOT NULL,
    event_id    TEXT NOT NULL
);
CREATE INDEX federation_queue_pdus_dest ON federation_queue_pdus (destination, id);

CREATE TABLE federation_queue_edus (
    id          SERIAL_PK,
    destination TEXT NOT NULL,
    edu         TEXT NOT NULL               -- {"edu_type": ..., "content": ...}
);
CREATE INDEX federation_queue_edus_dest ON federation_queue_edus (destination, id);
