package storage

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// The admin console's tables (migration 0033).

// ConsoleSession is a signed-in admin console session.
type ConsoleSession struct {
	UserID    string
	CSRF      string
	ExpiresTS int64
}

func consoleTokenHash(token string) string { return hex.EncodeToString(TokenHash(token)) }

// InsertConsoleSession stores a session under the hash of its token, and
// drops the expired ones.
func (db *DB) InsertConsoleSession(ctx context.Context, token string, s ConsoleSession) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE expires_ts < $1`, nowMillis()); err != nil {
			return fmt.Errorf("expiring console sessions: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO console_sessions (token_hash, user_id, csrf, expires_ts) VALUES ($1, $2, $3, $4)`,
			consoleTokenHash(token), s.UserID, s.CSRF, s.ExpiresTS)
		if err != nil {
			return fmt.Errorf("storing console session: %w", err)
		}
		return nil
	})
}

// ConsoleSessionByToken is the unexpired session of token, or ErrNotFound.
func (db *DB) ConsoleSessionByToken(ctx context.Context, token string) (ConsoleSession, error) {
	var s ConsoleSession
	err := db.Read().QueryRowContext(ctx, `SELECT user_id, csrf, expires_ts FROM console_sessions WHERE token_hash = $1 AND expires_ts >= $2`,
		consoleTokenHash(token), nowMillis()).Scan(&s.UserID, &s.CSRF, &s.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("reading console session: %w", err)
	}
	return s, nil
}

// DeleteConsoleSession signs a session out.
func (db *DB) DeleteConsoleSession(ctx context.Context, token string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM console_sessions WHERE token_hash = $1`, consoleTokenHash(token))
		return err
	})
}

// DailyStats is one day's row of the console's dashboard.
type DailyStats struct {
	Day                                   int64 // days since the epoch (UTC)
	Users, Devices, ActiveUsers, Messages int64
	Rooms, MediaBytes, FedUp, FedDown     int64
}

// RecordDailyStats rewrites day's row from s, counting the messages
// (m.room.message and m.room.encrypted) persisted since the day's first
// stream position.
func (db *DB) RecordDailyStats(ctx context.Context, day int64, s ServerStats, fedUp, fedDown int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		var first int64
		err := tx.QueryRowContext(ctx, `SELECT first_pos FROM console_daily_stats WHERE day = $1`, day).Scan(&first)
		if errors.Is(err, sql.ErrNoRows) {
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&first); err != nil {
				return fmt.Errorf("daily stats: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("daily stats: %w", err)
		}
		var messages int64
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE stream_pos > $1 AND state_key IS NULL
			AND type IN ('m.room.message', 'm.room.encrypted') AND NOT outlier`, first).Scan(&messages); err != nil {
			return fmt.Errorf("daily stats: %w", err)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO console_daily_stats (day, first_pos, users, devices, active_users, messages, rooms, media_bytes, fed_up, fed_down)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (day) DO UPDATE SET users = excluded.users, devices = excluded.devices, active_users = excluded.active_users,
			messages = excluded.messages, rooms = excluded.rooms, media_bytes = excluded.media_bytes, fed_up = excluded.fed_up, fed_down = excluded.fed_down`,
			day, first, s.Users, s.Devices, s.ActiveUsers, messages, s.Rooms, s.LocalMediaBytes, fedUp, fedDown)
		if err != nil {
			return fmt.Errorf("daily stats: %w", err)
		}
		return nil
	})
}

// DailyStatsSince lists the rows from day on, oldest first.
func (db *DB) DailyStatsSince(ctx context.Context, day int64) ([]DailyStats, error) {
	return queryList(ctx, db.Read(), "reading daily stats", `SELECT day, users, devices, active_users, messages, rooms, media_bytes, fed_up, fed_down
		FROM console_daily_stats WHERE day >= $1 ORDER BY day`, func(rows *sql.Rows, d *DailyStats) error {
		return rows.Scan(&d.Day, &d.Users, &d.Devices, &d.ActiveUsers, &d.Messages, &d.Rooms, &d.MediaBytes, &d.FedUp, &d.FedDown)
	}, day)
}

// QueuedReport is a content or user report no admin has acted on.
type QueuedReport struct {
	Kind       string // "event" or "user"
	ID         int64
	Subject    string // the room (and event) or the user reported
	EventID    string
	Reporter   string
	Reason     string
	ReceivedTS int64
}

// ReportQueue lists the reports with no action yet, oldest first.
func (db *DB) ReportQueue(ctx context.Context, limit int) ([]QueuedReport, error) {
	return queryList(ctx, db.Read(), "listing the report queue", `SELECT kind, id, subject, event_id, reporter, reason, received_ts FROM (
		SELECT 'event' AS kind, c.report_id AS id, c.room_id AS subject, COALESCE(c.event_id, '') AS event_id, c.reporter,
			COALESCE(c.reason, '') AS reason, c.received_ts FROM content_reports c
			WHERE NOT EXISTS (SELECT 1 FROM console_report_actions a WHERE a.kind = 'event' AND a.report_id = c.report_id)
		UNION ALL
		SELECT 'user', u.report_id, u.user_id, '', u.reporter, u.reason, u.received_ts FROM user_reports u
			WHERE NOT EXISTS (SELECT 1 FROM console_report_actions a WHERE a.kind = 'user' AND a.report_id = u.report_id)
		) q ORDER BY received_ts, id LIMIT $1`, func(rows *sql.Rows, r *QueuedReport) error {
		return rows.Scan(&r.Kind, &r.ID, &r.Subject, &r.EventID, &r.Reporter, &r.Reason, &r.ReceivedTS)
	}, limit)
}

// ActOnReport records an admin's action on a report (ErrNotFound if there
// is no such report); acting twice keeps the first action.
func (db *DB) ActOnReport(ctx context.Context, kind string, id int64, action, admin string) error {
	table := map[string]string{"event": "content_reports", "user": "user_reports"}[kind]
	if table == "" {
		return ErrNotFound
	}
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table+` WHERE report_id = $1`, id).Scan(&n); err != nil {
			return fmt.Errorf("acting on report: %w", err)
		}
		if n == 0 {
			return ErrNotFound
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO console_report_actions (kind, report_id, action, admin, ts) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (kind, report_id) DO NOTHING`, kind, id, action, admin, nowMillis())
		if err != nil {
			return fmt.Errorf("acting on report: %w", err)
		}
		return nil
	})
}

// MediaUsage is one local user's uploads.
type MediaUsage struct {
	UserID       string
	Count, Bytes int64
}

// MediaUsageByUser lists the local uploaders with the most bytes first.
func (db *DB) MediaUsageByUser(ctx context.Context, limit int) ([]MediaUsage, error) {
	return queryList(ctx, db.Read(), "media usage", `SELECT uploader, COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media
		WHERE uploader IS NOT NULL GROUP BY uploader ORDER BY 3 DESC, 1 LIMIT $1`, func(rows *sql.Rows, m *MediaUsage) error {
		return rows.Scan(&m.UserID, &m.Count, &m.Bytes)
	}, limit)
}
