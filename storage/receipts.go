package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Receipt is one read receipt.
type Receipt struct {
	StreamPos int64
	RoomID    string
	UserID    string
	Type      string
	ThreadID  string
	EventID   string
	TS        int64
}

// receiptLockKey serialises receipt writers on PostgreSQL so positions
// commit in order (see the account-data stream for why).
const receiptLockKey = 7460121

// PutReceipt stores a receipt, replacing the user's previous one of the same
// type and thread, and returns its stream position.
func (db *DB) PutReceipt(ctx context.Context, rc Receipt) (int64, error) {
	var pos int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", receiptLockKey); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM receipts WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4`,
			rc.RoomID, rc.UserID, rc.Type, rc.ThreadID); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `INSERT INTO receipts (room_id, user_id, receipt_type, thread_id, event_id, ts)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING stream_pos`,
			rc.RoomID, rc.UserID, rc.Type, rc.ThreadID, rc.EventID, rc.TS).Scan(&pos)
	})
	if err != nil {
		return 0, fmt.Errorf("storing receipt: %w", err)
	}
	return pos, nil
}

// ReceiptsSince returns a room's receipts with positions in (from, to].
func (db *DB) ReceiptsSince(ctx context.Context, roomID string, from, to int64) ([]Receipt, error) {
	return queryList(ctx, db.read, "loading receipts", `SELECT stream_pos, room_id, user_id, receipt_type, thread_id, event_id, ts
		FROM receipts WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, func(rows *sql.Rows, rc *Receipt) error {
		return rows.Scan(&rc.StreamPos, &rc.RoomID, &rc.UserID, &rc.Type, &rc.ThreadID, &rc.EventID, &rc.TS)
	}, roomID, from, to)
}

// RoomsWithReceiptsBetween returns the rooms with receipts in (from, to].
func (db *DB) RoomsWithReceiptsBetween(ctx context.Context, from, to int64) (map[string]bool, error) {
	return querySet[string](ctx, db.read, "listing rooms with receipts", `SELECT DISTINCT room_id FROM receipts WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
}

// MaxReceiptPos is the receipt stream's head.
func (db *DB) MaxReceiptPos(ctx context.Context) (int64, error) {
	var pos int64
	err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM receipts`).Scan(&pos)
	return pos, err
}

// ReceiptsAfter returns up to limit receipts of every room with positions
// after from, oldest first (application services' ephemeral push).
func (db *DB) ReceiptsAfter(ctx context.Context, from int64, limit int) ([]Receipt, error) {
	return queryList(ctx, db.read, "loading receipts", `SELECT stream_pos, room_id, user_id, receipt_type, thread_id, event_id, ts
		FROM receipts WHERE stream_pos > $1 ORDER BY stream_pos LIMIT $2`, func(rows *sql.Rows, rc *Receipt) error {
		return rows.Scan(&rc.StreamPos, &rc.RoomID, &rc.UserID, &rc.Type, &rc.ThreadID, &rc.EventID, &rc.TS)
	}, from, limit)
}
