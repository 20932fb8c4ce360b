package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ServerKey is one verify key of another server (server-server API,
// Retrieving server keys). ExpiredTS is 0 for a current key, ValidUntilTS 0
// for an old one.
type ServerKey struct {
	ServerName   string
	KeyID        string
	VerifyKey    string // unpadded base64
	ValidUntilTS int64
	ExpiredTS    int64
}

// ServerKeysOf returns the stored keys of the given servers.
func ServerKeysOf(ctx context.Context, q Reader, servers []string) ([]ServerKey, error) {
	if len(servers) == 0 {
		return nil, nil
	}
	args := make([]any, len(servers))
	for i, s := range servers {
		args[i] = s
	}
	return queryList(ctx, q, "loading server keys", `SELECT server_name, key_id, verify_key, valid_until_ts, expired_ts
		FROM server_keys WHERE server_name IN (`+placeholders(1, len(servers))+`)`, func(rows *sql.Rows, k *ServerKey) error {
		return rows.Scan(&k.ServerName, &k.KeyID, &k.VerifyKey, &k.ValidUntilTS, &k.ExpiredTS)
	}, args...)
}

// PutServerKeys stores keys, replacing earlier copies of the same key ID
// unless the stored copy is valid for longer.
func PutServerKeys(ctx context.Context, tx *sql.Tx, keys []ServerKey) error {
	for _, k := range keys {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts)
			VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (server_name, key_id) DO UPDATE SET verify_key = excluded.verify_key,
				valid_until_ts = excluded.valid_until_ts, expired_ts = excluded.expired_ts
			WHERE excluded.expired_ts <> 0 OR excluded.valid_until_ts >= server_keys.valid_until_ts`,
			k.ServerName, k.KeyID, k.VerifyKey, k.ValidUntilTS, k.ExpiredTS)
		if err != nil {
			return fmt.Errorf("storing server key: %w", err)
		}
	}
	return nil
}

// ServerKeyResponse returns the newest signed key response stored for a
// server, or ErrNotFound.
func ServerKeyResponse(ctx context.Context, q Reader, server string) (validUntilTS int64, response []byte, err error) {
	var s string
	err = q.QueryRowContext(ctx, `SELECT valid_until_ts, response FROM server_key_responses WHERE server_name = $1`, server).Scan(&validUntilTS, &s)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("loading key response: %w", err)
	}
	return validUntilTS, []byte(s), nil
}

// PutServerKeyResponse keeps a server's signed key response unless a
// stored one is valid for longer.
func PutServerKeyResponse(ctx context.Context, tx *sql.Tx, server string, validUntilTS int64, response []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO server_key_responses (server_name, valid_until_ts, response) VALUES ($1, $2, $3)
		ON CONFLICT (server_name) DO UPDATE SET valid_until_ts = excluded.valid_until_ts, response = excluded.response
		WHERE excluded.valid_until_ts >= server_key_responses.valid_until_ts`, server, validUntilTS, string(response))
	if err != nil {
		return fmt.Errorf("storing key response: %w", err)
	}
	return nil
}

// InboundTxn returns the response recorded for a transaction from origin,
// or ErrNotFound.
func InboundTxn(ctx context.Context, q Reader, origin, txnID string) ([]byte, error) {
	var s string
	err := q.QueryRowContext(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading inbound transaction: %w", err)
	}
	return []byte(s), nil
}

// PutInboundTxn records the response to a transaction.
func PutInboundTxn(ctx context.Context, tx *sql.Tx, origin, txnID string, response []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), nowMillis())
	if err != nil {
		return fmt.Errorf("recording inbound transaction: %w", err)
	}
	return nil
}

// QueuedPDU is an event waiting to be sent to a destination.
type QueuedPDU struct {
	ID      int64
	EventID string
}

// QueuedEDU is an EDU ({"edu_type", "content"} JSON) waiting to be sent.
type QueuedEDU struct {
	ID  int64
	EDU []byte
}

// QueuePDUs adds events to the queues of destinations.
func QueuePDUs(ctx context.Context, tx *sql.Tx, destinations, eventIDs []string) error {
	for _, d := range destinations {
		for _, id := range eventIDs {
			if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_pdus (destination, event_id) VALUES ($1, $2)`, d, id); err != nil {
				return fmt.Errorf("queueing PDU: %w", err)
			}
		}
	}
	return nil
}

// QueueEDU adds an EDU to the queues of destinations.
func QueueEDU(ctx context.Context, tx *sql.Tx, destinations []string, edu []byte) error {
	for _, d := range destinations {
		if _, err := tx.ExecContext(ctx, `INSERT INTO federation_queue_edus (destination, edu) VALUES ($1, $2)`, d, string(edu)); err != nil {
			return fmt.Errorf("queueing EDU: %w", err)
		}
	}
	return nil
}

// PendingPDUs returns up to limit queued events for a destination, oldest first.
func PendingPDUs(ctx context.Context, q Reader, destination string, limit int) ([]QueuedPDU, error) {
	return queryList(ctx, q, "loading queued PDUs", `SELECT id, event_id FROM federation_queue_pdus WHERE destination = $1 ORDER BY id LIMIT $2`,
		func(rows *sql.Rows, p *QueuedPDU) error {
			return rows.Scan(&p.ID, &p.EventID)
		}, destination, limit)
}

// PendingEDUs returns up to limit queued EDUs for a destination, oldest first.
func PendingEDUs(ctx context.Context, q Reader, destination string, limit int) ([]QueuedEDU, error) {
	return queryList(ctx, q, "loading queued EDUs", `SELECT id, edu FROM federation_queue_edus WHERE destination = $1 ORDER BY id LIMIT $2`,
		func(rows *sql.Rows, e *QueuedEDU) error {
			var s string
			if err := rows.Scan(&e.ID, &s); err != nil {
				return err
			}
			e.EDU = []byte(s)
			return nil
		}, destination, limit)
}

// DeleteQueued removes sent queue rows.
func DeleteQueued(ctx context.Context, tx *sql.Tx, pduIDs, eduIDs []int64) error {
	for _, t := range []struct {
		table string
		ids   []int64
	}{{"federation_queue_pdus", pduIDs}, {"federation_queue_edus", eduIDs}} {
		if len(t.ids) == 0 {
			continue
		}
		args := make([]any, len(t.ids))
		for i, id := range t.ids {
			args[i] = id
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM `+t.table+` WHERE id IN (`+placeholders(1, len(args))+`)`, args...); err != nil {
			return fmt.Errorf("deleting sent queue rows: %w", err)
		}
	}
	return nil
}

// QueueDestinations lists the destinations with anything queued.
func QueueDestinations(ctx context.Context, q Reader) ([]string, error) {
	return queryColumn[string](ctx, q, "listing queue destinations", `SELECT destination FROM federation_queue_pdus UNION SELECT destination FROM federation_queue_edus`)
}
