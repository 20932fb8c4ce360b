package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// AppServiceStream is an appservice_streams row: how far events have
// been pushed to one application service, and the transaction in flight.
type AppServiceStream struct {
	DeliveredPos int64
	TxnID        int64
	TxnToPos     int64
	TxnEvents    []string // empty: no transaction in flight
}

// GetAppServiceStream loads a service's progress; ErrNotFound before its
// first start.
func (db *DB) GetAppServiceStream(ctx context.Context, asID string) (AppServiceStream, error) {
	var s AppServiceStream
	var evs string
	err := db.Read().QueryRowContext(ctx, `SELECT delivered_pos, txn_id, txn_to_pos, txn_events FROM appservice_streams WHERE as_id = $1`, asID).
		Scan(&s.DeliveredPos, &s.TxnID, &s.TxnToPos, &evs)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("loading appservice stream %s: %w", asID, err)
	}
	if err := json.Unmarshal([]byte(evs), &s.TxnEvents); err != nil {
		return s, fmt.Errorf("appservice stream %s: txn_events: %w", asID, err)
	}
	return s, nil
}

// StartAppServiceStream records a new service's starting position (the
// stream head: a new bridge is not sent the server's history); an
// existing row is kept.
func (db *DB) StartAppServiceStream(ctx context.Context, asID string, pos int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO appservice_streams (as_id, delivered_pos, txn_id, txn_to_pos, txn_events)
			VALUES ($1, $2, 0, $2, '[]') ON CONFLICT (as_id) DO NOTHING`, asID, pos)
		return err
	})
}

// BeginAppServiceTxn records transaction txnID, carrying eventIDs (the
// interesting events up to toPos), as in flight.
func (db *DB) BeginAppServiceTxn(ctx context.Context, asID string, txnID, toPos int64, eventIDs []string) error {
	evs, _ := json.Marshal(eventIDs)
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE appservice_streams SET txn_id = $1, txn_to_pos = $2, txn_events = $3 WHERE as_id = $4`,
			txnID, toPos, string(evs), asID)
		return err
	})
}

// AdvanceAppServiceStream records every event up to pos as delivered (or
// of no interest) and ends the transaction in flight.
func (db *DB) AdvanceAppServiceStream(ctx context.Context, asID string, pos int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE appservice_streams SET delivered_pos = $1, txn_to_pos = $1, txn_events = '[]' WHERE as_id = $2`, pos, asID)
		return err
	})
}
