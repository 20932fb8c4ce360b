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

// UserReport is a user's report of another user (v1.14).
type UserReport struct {
	UserID   string // the reported user
	Reporter string
	Reason   string
}

// InsertUserReport stores a report of a user.
func (db *DB) InsertUserReport(ctx context.Context, rep UserReport) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO user_reports (user_id, reporter, reason, received_ts)
			VALUES ($1, $2, $3, $4)`, rep.UserID, rep.Reporter, rep.Reason, nowMillis())
		if err != nil {
			return fmt.Errorf("storing user report: %w", err)
		}
		return nil
	})
}

// ReportsOfUser lists the reports about a user, oldest first.
func ReportsOfUser(ctx context.Context, q Reader, userID string) ([]UserReport, error) {
	return queryList(ctx, q, "listing user reports", `SELECT user_id, reporter, reason FROM user_reports
		WHERE user_id = $1 ORDER BY report_id`, func(rows *sql.Rows, rep *UserReport) error {
		return rows.Scan(&rep.UserID, &rep.Reporter, &rep.Reason)
	}, userID)
}
