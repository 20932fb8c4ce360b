package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// ContentReport is a user's report of an event or a room.
type ContentReport struct {
	RoomID   string
	EventID  *string // nil: the room is reported
	Reporter string
	Reason   *string
	Score    *int
}

// InsertReport stores a content report.
func (db *DB) InsertReport(ctx context.Context, rep ContentReport) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO content_reports (room_id, event_id, reporter, reason, score, received_ts)
			VALUES ($1, $2, $3, $4, $5, $6)`, rep.RoomID, rep.EventID, rep.Reporter, rep.Reason, rep.Score, nowMillis())
		if err != nil {
			return fmt.Errorf("storing report: %w", err)
		}
		return nil
	})
}

// ReportsOfRoom lists the reports about a room and its events, oldest first.
func ReportsOfRoom(ctx context.Context, q Reader, roomID string) ([]ContentReport, error) {
	return queryList(ctx, q, "listing reports", `SELECT room_id, event_id, reporter, reason, score FROM content_reports
		WHERE room_id = $1 ORDER BY report_id`, func(rows *sql.Rows, rep *ContentReport) error {
		return rows.Scan(&rep.RoomID, &rep.EventID, &rep.Reporter, &rep.Reason, &rep.Score)
	}, roomID)
}
