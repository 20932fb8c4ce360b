package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ServerNoticeRoom is the user's server notices room; ErrNotFound if none
// was made yet.
func ServerNoticeRoom(ctx context.Context, q Reader, userID string) (string, error) {
	var roomID string
	err := q.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading server notices room: %w", err)
	}
	return roomID, nil
}

// SetServerNoticeRoom records the user's server notices room.
func (db *DB) SetServerNoticeRoom(ctx context.Context, userID, roomID string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
		if err != nil {
			return fmt.Errorf("storing server notices room: %w", err)
		}
		return nil
	})
}
