package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// AppServiceStream is an appservice_streams row: how far events (and
// receipts) have been pushed to one application service, and the
// transaction in flight.
type AppServiceStream struct {
	DeliveredPos int64
	ReceiptPos   int64 // receipts up to it sent or of no interest (v1.13)
	TxnID        int64
	TxnToPos     int64
	TxnEvents    []string        // with TxnEphemeral empty: no transaction in flight
	TxnEphemeral json.RawMessage // the ephemeral array in flight, "[]" when none
	TxnReceipt   int64           // the receipt position the transaction reaches
}

// InFlight reports whether a transaction is waiting to be accepted.
func (s AppServiceStream) InFlight() bool {
	return len(s.TxnEvents) > 0 || (len(s.TxnEphemeral) > 0 && string(s.TxnEphemeral) != "[]")
}

// GetAppServiceStream loads a service's progress; ErrNotFound before its
// first start.
func (db *DB) GetAppServiceStream(ctx context.Context, asID string) (AppServiceStream, error) {
	var s AppServiceStream
	var evs, eph string
	err := db.Read().QueryRowContext(ctx, `SELECT delivered_pos, receipt_pos, txn_id, txn_to_pos, txn_events, txn_ephemeral, txn_receipt_pos
		FROM appservice_streams WHERE as_id = $1`, asID).
		Scan(&s.DeliveredPos, &s.ReceiptPos, &s.TxnID, &s.TxnToPos, &evs, &eph, &s.TxnReceipt)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("loading appservice stream %s: %w", asID, err)
	}
	if err := json.Unmarshal([]byte(evs), &s.TxnEvents); err != nil {
		return s, fmt.Errorf("appservice stream %s: txn_events: %w", asID, err)
	}
	s.TxnEphemeral = json.RawMessage(eph)
	return s, nil
}

// StartAppServiceStream records a new service's starting positions (the
// stream heads: a new bridge is not sent the server's history); an
// existing row is kept.
func (db *DB) StartAppServiceStream(ctx context.Context, asID string, pos, receiptPos int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO appservice_streams (as_id, delivered_pos, txn_id, txn_to_pos, txn_events, receipt_pos, txn_receipt_pos, txn_ephemeral)
			VALUES ($1, $2, 0, $2, '[]', $3, $3, '[]') ON CONFLICT (as_id) DO NOTHING`, asID, pos, receiptPos)
		return err
	})
}

// SkipAppServiceReceipts moves a service that takes no ephemeral data to
// the receipt head, so turning receive_ephemeral on later does not send
// it old receipts. Only when nothing is in flight.
func (db *DB) SkipAppServiceReceipts(ctx context.Context, asID string, receiptPos int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE appservice_streams SET receipt_pos = $1, txn_receipt_pos = $1
			WHERE as_id = $2 AND txn_events = '[]' AND txn_ephemeral = '[]' AND receipt_pos < $1`, receiptPos, asID)
		return err
	})
}

// BeginAppServiceTxn records transaction txnID, carrying eventIDs (the
// interesting events up to toPos) and the ephemeral array (receipts up to
// receiptPos), as in flight.
func (db *DB) BeginAppServiceTxn(ctx context.Context, asID string, txnID, toPos int64, eventIDs []string, ephemeral json.RawMessage, receiptPos int64) error {
	evs, _ := json.Marshal(eventIDs)
	if len(ephemeral) == 0 {
		ephemeral = json.RawMessage("[]")
	}
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE appservice_streams SET txn_id = $1, txn_to_pos = $2, txn_events = $3, txn_ephemeral = $4, txn_receipt_pos = $5
			WHERE as_id = $6`, txnID, toPos, string(evs), string(ephemeral), receiptPos, asID)
		return err
	})
}

// AdvanceAppServiceStream records every event up to pos and receipt up
// to receiptPos as delivered (or of no interest) and ends the transaction
// in flight.
func (db *DB) AdvanceAppServiceStream(ctx context.Context, asID string, pos, receiptPos int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE appservice_streams SET delivered_pos = $1, txn_to_pos = $1, txn_events = '[]',
			receipt_pos = $2, txn_receipt_pos = $2, txn_ephemeral = '[]' WHERE as_id = $3`, pos, receiptPos, asID)
		return err
	})
}
