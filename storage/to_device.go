package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// ToDeviceMessage is one message in a device's inbox.
type ToDeviceMessage struct {
	Position int64
	Sender   string
	Type     string
	Content  string // JSON object
}

// InsertToDevice appends a message to a device's inbox and returns its
// position in the to-device stream.
func (db *DB) InsertToDevice(ctx context.Context, tx *sql.Tx, userID, deviceID string, m ToDeviceMessage) (int64, error) {
	if err := db.lockStream(ctx, tx, lockToDeviceStream); err != nil {
		return 0, err
	}
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO to_device_inbox (user_id, device_id, sender, type, content)
		VALUES ($1, $2, $3, $4, $5) RETURNING position`, userID, deviceID, m.Sender, m.Type, m.Content).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storing to-device message: %w", err)
	}
	return pos, setStreamHead(ctx, tx, "to_device", pos)
}

// InboxSize counts the messages waiting in a device's inbox.
func InboxSize(ctx context.Context, q Reader, userID, deviceID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM to_device_inbox WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting inbox: %w", err)
	}
	return n, nil
}

// InboxRange lists a device's messages with positions in (after, upto], in
// order, at most limit.
func InboxRange(ctx context.Context, q Reader, userID, deviceID string, after, upto int64, limit int) ([]ToDeviceMessage, error) {
	return queryList(ctx, q, "reading inbox", `SELECT position, sender, type, content FROM to_device_inbox
		WHERE user_id = $1 AND device_id = $2 AND position > $3 AND position <= $4 ORDER BY position LIMIT $5`,
		func(rows *sql.Rows, m *ToDeviceMessage) error {
			return rows.Scan(&m.Position, &m.Sender, &m.Type, &m.Content)
		}, userID, deviceID, after, upto, limit)
}

// DeleteInboxUpTo deletes a device's messages with positions <= upto.
func DeleteInboxUpTo(ctx context.Context, tx *sql.Tx, userID, deviceID string, upto int64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2 AND position <= $3`,
		userID, deviceID, upto)
	if err != nil {
		return fmt.Errorf("acknowledging inbox: %w", err)
	}
	return nil
}

// MaxToDevicePos is the newest committed to-device stream position.
func MaxToDevicePos(ctx context.Context, q Reader) (int64, error) {
	return streamHead(ctx, q, "to_device")
}
