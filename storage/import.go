package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Writes for importing another server's data (hearth import dendrite):
// rows keep the positions and IDs they had there, so that clients'
// saved sync tokens and filter IDs go on meaning the same thing. All of
// them run inside one transaction of the importer; ResetSequences must be
// called before it commits.

// IsEmpty reports whether the database holds no user, room or event: an
// import goes only into a new installation.
func IsEmpty(ctx context.Context, q Reader) (bool, error) {
	for _, table := range []string{"users", "rooms", "events", "media"} {
		var n int64
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
			return false, fmt.Errorf("counting %s: %w", table, err)
		}
		if n > 0 {
			return false, nil
		}
	}
	return true, nil
}

// CountRows counts the rows of one table (the importer's final checks).
func CountRows(ctx context.Context, q Reader, table, where string, args ...any) (int64, error) {
	var n int64
	query := `SELECT COUNT(*) FROM ` + table
	if where != "" {
		query += " WHERE " + where
	}
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting %s: %w", table, err)
	}
	return n, nil
}

// ImportEvent stores an event at the stream position it is given (the
// position it had on the source server, or a negative one below the
// timeline for events the source did not stream), with its redaction.
func ImportEvent(ctx context.Context, tx *sql.Tx, e Event) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
		membership, snapshot_before, snapshot_after, rejected, soft_failed, outlier, redacted_by, relates_to, rel_type,
		prev_content, prev_sender, replaces_state, sender_device, txn_id, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)`,
		e.StreamPos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginTS, e.Membership,
		e.SnapshotBefore, e.SnapshotAfter, e.Rejected, e.SoftFailed, e.Outlier, e.RedactedBy, e.RelatesTo, e.RelType,
		e.PrevContent, e.PrevSender, e.ReplacesState, e.SenderDevice, e.TxnID, string(e.JSON))
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("importing event %s: %w", e.EventID, err)
	}
	return nil
}

// ImportAccountData stores one account data entry at a given position.
func ImportAccountData(ctx context.Context, tx *sql.Tx, pos int64, userID, roomID, dataType string, content []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO account_data (stream_pos, user_id, room_id, data_type, content) VALUES ($1, $2, $3, $4, $5)`,
		pos, userID, roomID, dataType, string(content))
	if err != nil {
		return fmt.Errorf("importing account data %s of %s: %w", dataType, userID, err)
	}
	return nil
}

// ImportReceipt stores a receipt at a given position.
func ImportReceipt(ctx context.Context, tx *sql.Tx, rc Receipt) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO receipts (stream_pos, room_id, user_id, receipt_type, thread_id, event_id, ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, rc.StreamPos, rc.RoomID, rc.UserID, rc.Type, rc.ThreadID, rc.EventID, rc.TS)
	if err != nil {
		return fmt.Errorf("importing receipt: %w", err)
	}
	return nil
}

// ImportFilter stores a filter under the ID it had.
func ImportFilter(ctx context.Context, tx *sql.Tx, id int64, userID string, filter []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO filters (filter_id, user_id, filter) VALUES ($1, $2, $3)`, id, userID, string(filter))
	if err != nil {
		return fmt.Errorf("importing filter %d: %w", id, err)
	}
	return nil
}

// ImportUser stores an account as it was: its password hash untouched,
// its creation time, admin and deactivated flags.
func ImportUser(ctx context.Context, tx *sql.Tx, u User) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, user_type, deactivated, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		u.UserID, u.Localpart, nullString(u.PasswordHash), u.IsAdmin, u.IsGuest, nullString(u.UserType), u.Deactivated, u.CreatedTS)
	if err != nil {
		return fmt.Errorf("importing user %s: %w", u.UserID, err)
	}
	return nil
}

// ImportProfile stores a user's display name and avatar.
func ImportProfile(ctx context.Context, tx *sql.Tx, userID string, displayName, avatarURL *string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO profiles (user_id, displayname, avatar_url) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname, avatar_url = excluded.avatar_url`, userID, displayName, avatarURL)
	if err != nil {
		return fmt.Errorf("importing profile of %s: %w", userID, err)
	}
	return nil
}

// ImportDevice stores a device with its creation and last-seen data.
func ImportDevice(ctx context.Context, tx *sql.Tx, d Device) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $5, $6)`, d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenTS, d.LastSeenIP)
	if err != nil {
		return fmt.Errorf("importing device %s of %s: %w", d.DeviceID, d.UserID, err)
	}
	return nil
}

// ResetSequences moves PostgreSQL's sequences past rows written with
// explicit IDs (SQLite needs nothing: it takes the largest ID plus one).
func (db *DB) ResetSequences(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != Postgres {
		return nil
	}
	return resetSequences(ctx, tx)
}

// ImportForgotten records that a user forgot a room.
func ImportForgotten(ctx context.Context, tx *sql.Tx, userID, roomID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	if err != nil {
		return fmt.Errorf("importing forgotten room: %w", err)
	}
	return nil
}

// ImportToDevice stores an undelivered to-device message at its position.
func ImportToDevice(ctx context.Context, tx *sql.Tx, userID, deviceID string, m ToDeviceMessage) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO to_device_inbox (position, user_id, device_id, sender, type, content) VALUES ($1, $2, $3, $4, $5, $6)`,
		m.Position, userID, deviceID, m.Sender, m.Type, m.Content)
	if err != nil {
		return fmt.Errorf("importing to-device message: %w", err)
	}
	return setStreamHeadAtLeast(ctx, tx, "to_device", m.Position)
}

// ImportDeviceListChange records a user's device-list change at its position.
func ImportDeviceListChange(ctx context.Context, tx *sql.Tx, userID string, pos int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO device_list_stream (position, user_id) VALUES ($1, $2)`, pos, userID); err != nil {
		return fmt.Errorf("importing device list change: %w", err)
	}
	return setStreamHeadAtLeast(ctx, tx, "device_lists", pos)
}

func setStreamHeadAtLeast(ctx context.Context, tx *sql.Tx, stream string, pos int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE stream_heads SET position = $1 WHERE stream = $2 AND position < $1`, pos, stream)
	return err
}

// ImportBackupVersion stores a key backup version under its number.
func ImportBackupVersion(ctx context.Context, tx *sql.Tx, userID string, v BackupVersion) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data, etag, deleted) VALUES ($1, $2, $3, $4, $5, $6)`,
		userID, v.Version, v.Algorithm, v.AuthData, v.Etag, v.Deleted)
	if err != nil {
		return fmt.Errorf("importing key backup version: %w", err)
	}
	return nil
}
