package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// BackupVersion is one server-side key backup of a user.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  string // JSON object
	Etag      int64
	Deleted   bool
}

// BackupSession is one backed-up megolm session key.
type BackupSession struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       string // JSON object
}

const backupVersionColumns = `version, algorithm, auth_data, etag, deleted`

func scanBackupVersion(row *sql.Row) (BackupVersion, error) {
	var v BackupVersion
	err := row.Scan(&v.Version, &v.Algorithm, &v.AuthData, &v.Etag, &v.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("loading key backup version: %w", err)
	}
	return v, nil
}

// LatestBackupVersion returns a user's newest backup that is not deleted.
func LatestBackupVersion(ctx context.Context, q Reader, userID string) (BackupVersion, error) {
	return scanBackupVersion(q.QueryRowContext(ctx, `SELECT `+backupVersionColumns+` FROM key_backup_versions
		WHERE user_id = $1 AND NOT deleted ORDER BY version DESC LIMIT 1`, userID))
}

// GetBackupVersion returns one backup version, deleted or not.
func GetBackupVersion(ctx context.Context, q Reader, userID string, version int64) (BackupVersion, error) {
	return scanBackupVersion(q.QueryRowContext(ctx, `SELECT `+backupVersionColumns+` FROM key_backup_versions
		WHERE user_id = $1 AND version = $2`, userID, version))
}

// InsertBackupVersion creates a backup with the next version number.
func InsertBackupVersion(ctx context.Context, tx *sql.Tx, userID, algorithm, authData string) (int64, error) {
	var v int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) + 1 FROM key_backup_versions WHERE user_id = $1`, userID).Scan(&v); err != nil {
		return 0, fmt.Errorf("numbering key backup: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO key_backup_versions (user_id, version, algorithm, auth_data) VALUES ($1, $2, $3, $4)`,
		userID, v, algorithm, authData)
	if isUniqueViolation(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("creating key backup: %w", err)
	}
	return v, nil
}

// UpdateBackupAuthData replaces a backup's auth_data.
func UpdateBackupAuthData(ctx context.Context, tx *sql.Tx, userID string, version int64, authData string) error {
	_, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3`,
		authData, userID, version)
	return err
}

// DeleteBackupVersion marks a backup deleted and drops its keys.
func DeleteBackupVersion(ctx context.Context, tx *sql.Tx, userID string, version int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE key_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2`, userID, version); err != nil {
		return fmt.Errorf("deleting key backup: %w", err)
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version)
	return err
}

// BumpBackupEtag advances a backup's etag and returns it. Called first in a
// transaction that changes keys, it also locks the backup's row, so writes
// to one backup take turns.
func BumpBackupEtag(ctx context.Context, tx *sql.Tx, userID string, version int64) (int64, error) {
	var etag int64
	err := tx.QueryRowContext(ctx, `UPDATE key_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2 RETURNING etag`,
		userID, version).Scan(&etag)
	if err != nil {
		return 0, fmt.Errorf("advancing key backup etag: %w", err)
	}
	return etag, nil
}

// BackupKeyCount counts the keys in a backup.
func BackupKeyCount(ctx context.Context, q Reader, userID string, version int64) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM key_backup_sessions WHERE user_id = $1 AND version = $2`, userID, version).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting backup keys: %w", err)
	}
	return n, nil
}

// BackupSessions lists a backup's keys, narrowed to a room and a session
// when those are not empty.
func BackupSessions(ctx context.Context, q Reader, userID string, version int64, roomID, sessionID string) ([]BackupSession, error) {
	return queryList(ctx, q, "reading backup keys", `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM key_backup_sessions WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)
		ORDER BY room_id, session_id`, func(rows *sql.Rows, s *BackupSession) error {
		return rows.Scan(&s.RoomID, &s.SessionID, &s.FirstMessageIndex, &s.ForwardedCount, &s.IsVerified, &s.SessionData)
	}, userID, version, roomID, sessionID)
}

// UpsertBackupSession stores or replaces one backed-up key.
func UpsertBackupSession(ctx context.Context, tx *sql.Tx, userID string, version int64, s BackupSession) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO key_backup_sessions (user_id, version, room_id, session_id,
		first_message_index, forwarded_count, is_verified, session_data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
			forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
		userID, version, s.RoomID, s.SessionID, s.FirstMessageIndex, s.ForwardedCount, s.IsVerified, s.SessionData)
	if err != nil {
		return fmt.Errorf("storing backup key: %w", err)
	}
	return nil
}

// DeleteBackupSessions deletes a backup's keys, narrowed to a room and a
// session when those are not empty; it reports how many it deleted.
func DeleteBackupSessions(ctx context.Context, tx *sql.Tx, userID string, version int64, roomID, sessionID string) (int64, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM key_backup_sessions WHERE user_id = $1 AND version = $2
		AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)`, userID, version, roomID, sessionID)
	if err != nil {
		return 0, fmt.Errorf("deleting backup keys: %w", err)
	}
	return res.RowsAffected()
}

// LockBackupVersion loads a backup version and locks its row until the
// transaction ends (an UPDATE that changes nothing: SQLite has no FOR
// UPDATE), so writes to one backup take turns.
func LockBackupVersion(ctx context.Context, tx *sql.Tx, userID string, version int64) (BackupVersion, error) {
	var v BackupVersion
	err := tx.QueryRowContext(ctx, `UPDATE key_backup_versions SET etag = etag WHERE user_id = $1 AND version = $2
		RETURNING `+backupVersionColumns, userID, version).Scan(&v.Version, &v.Algorithm, &v.AuthData, &v.Etag, &v.Deleted)
	if errors.Is(err, sql.ErrNoRows) {
		return v, ErrNotFound
	}
	if err != nil {
		return v, fmt.Errorf("locking key backup: %w", err)
	}
	return v, nil
}
