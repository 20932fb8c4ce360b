package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// GetUserByLocalpart loads a user by localpart.
func (db *DB) GetUserByLocalpart(ctx context.Context, localpart string) (User, error) {
	var userID string
	err := db.read.QueryRowContext(ctx, `SELECT user_id FROM users WHERE localpart = $1`, localpart).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, ErrNotFound
	}
	if err != nil {
		return User{}, fmt.Errorf("loading user: %w", err)
	}
	return db.GetUser(ctx, userID)
}

// ListDevices returns a user's devices, ordered by device ID.
func (db *DB) ListDevices(ctx context.Context, userID string) ([]Device, error) {
	return db.queryDevices(ctx, `WHERE user_id = $1`, userID)
}

// GetDevice loads one device of a user.
func (db *DB) GetDevice(ctx context.Context, userID, deviceID string) (Device, error) {
	ds, err := db.queryDevices(ctx, `WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return Device{}, err
	}
	if len(ds) == 0 {
		return Device{}, ErrNotFound
	}
	return ds[0], nil
}

func (db *DB) queryDevices(ctx context.Context, where string, args ...any) ([]Device, error) {
	return orEmpty(queryList(ctx, db.read, "loading devices", `SELECT user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip
		FROM devices `+where+` ORDER BY device_id`, func(rows *sql.Rows, d *Device) error {
		return rows.Scan(&d.UserID, &d.DeviceID, &d.DisplayName, &d.CreatedTS, &d.LastSeenTS, &d.LastSeenIP)
	}, args...))
}

// DeviceExists reports whether the user has the device, inside a transaction.
func DeviceExists(ctx context.Context, tx *sql.Tx, userID, deviceID string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("checking device: %w", err)
	}
	return n > 0, nil
}

// HasOtherDevice reports whether the user has a device other than deviceID
// (a dehydrated device does not count: nobody reads with it).
func HasOtherDevice(ctx context.Context, tx *sql.Tx, userID, deviceID string) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM devices d WHERE d.user_id = $1 AND d.device_id <> $2
		AND NOT EXISTS (SELECT 1 FROM dehydrated_devices h WHERE h.user_id = d.user_id AND h.device_id = d.device_id) LIMIT 1`,
		userID, deviceID).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking other devices: %w", err)
	}
	return true, nil
}

// SetDeviceDisplayName renames a device; ErrNotFound if the user has no such device.
func SetDeviceDisplayName(ctx context.Context, tx *sql.Tx, userID, deviceID string, name *string) error {
	res, err := tx.ExecContext(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, name, userID, deviceID)
	if err != nil {
		return fmt.Errorf("renaming device: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteDeviceTokens revokes every access and refresh token of one device.
func DeleteDeviceTokens(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("deleting access tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("deleting refresh tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM spent_refresh_tokens WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("deleting spent refresh tokens: %w", err)
	}
	return nil
}

// DeleteDeviceRow removes the device row itself (tokens go separately).
func DeleteDeviceRow(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID); err != nil {
		return fmt.Errorf("deleting device: %w", err)
	}
	return nil
}

// SetPasswordHash replaces a user's password hash.
func SetPasswordHash(ctx context.Context, tx *sql.Tx, userID, hash string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = $1 WHERE user_id = $2`, nullString(hash), userID); err != nil {
		return fmt.Errorf("setting password: %w", err)
	}
	return nil
}

// DeactivateUser marks a user deactivated and removes its password and
// email addresses; with erase it also clears the profile (custom fields
// too) and the account data: the spec's erase asks for the non-event data
// to go as well (client-server API, POST /account/deactivate).
func DeactivateUser(ctx context.Context, tx *sql.Tx, userID string, erase bool) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET deactivated = TRUE, password_hash = NULL WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("deactivating user: %w", err)
	}
	// A deactivated account keeps no email address: it could otherwise
	// never be added to another account, nor used to reset a password.
	if err := DeleteThreePIDsOfUser(ctx, tx, userID); err != nil {
		return err
	}
	if erase {
		if _, err := tx.ExecContext(ctx, `UPDATE profiles SET displayname = NULL, avatar_url = NULL WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("erasing profile: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET erased = TRUE WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("marking user erased: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("erasing profile fields: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM account_data WHERE user_id = $1`, userID); err != nil {
			return fmt.Errorf("erasing account data: %w", err)
		}
	}
	return nil
}

// UserLocked reports whether a user's account is locked, inside a
// transaction; an unknown user is not locked.
func UserLocked(ctx context.Context, tx *sql.Tx, userID string) (bool, error) {
	var l bool
	err := tx.QueryRowContext(ctx, `SELECT locked FROM users WHERE user_id = $1`, userID).Scan(&l)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking lock: %w", err)
	}
	return l, nil
}

// SetUserLocked locks or unlocks an account (account locking, v1.12).
func SetUserLocked(ctx context.Context, tx *sql.Tx, userID string, locked bool) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET locked = $1 WHERE user_id = $2`, locked, userID); err != nil {
		return fmt.Errorf("locking user: %w", err)
	}
	return nil
}

// SetUserSuspended suspends or unsuspends an account (account
// suspension, v1.13).
func SetUserSuspended(ctx context.Context, tx *sql.Tx, userID string, suspended bool) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET suspended = $1 WHERE user_id = $2`, suspended, userID); err != nil {
		return fmt.Errorf("suspending user: %w", err)
	}
	return nil
}

// InsertRefreshToken stores the hash of a refresh token.
func InsertRefreshToken(ctx context.Context, tx *sql.Tx, token, userID, deviceID string, prevHash []byte, createdTS int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens (token_hash, user_id, device_id, prev_hash, created_ts)
		VALUES ($1, $2, $3, $4, $5)`, TokenHash(token), userID, deviceID, nullBytes(prevHash), createdTS)
	if err != nil {
		return fmt.Errorf("inserting refresh token: %w", err)
	}
	return nil
}

// RefreshOwner is the device a refresh token belongs to.
type RefreshOwner struct {
	UserID, DeviceID string
	PrevHash         []byte
}

// LookupRefreshToken finds a live refresh token inside a transaction.
func LookupRefreshToken(ctx context.Context, tx *sql.Tx, token string) (RefreshOwner, error) {
	var o RefreshOwner
	err := tx.QueryRowContext(ctx, `SELECT r.user_id, r.device_id, r.prev_hash FROM refresh_tokens r JOIN users u ON u.user_id = r.user_id
		WHERE r.token_hash = $1 AND NOT u.deactivated`, TokenHash(token)).Scan(&o.UserID, &o.DeviceID, &o.PrevHash)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("looking up refresh token: %w", err)
	}
	return o, nil
}

// RevokeRefreshGeneration deletes the refresh token with hash prevHash and
// the access tokens issued with it: the previous generation dies when the
// next one is first used.
func RevokeRefreshGeneration(ctx context.Context, tx *sql.Tx, prevHash []byte) error {
	// Remembered as spent, so that presenting it again is seen as reuse.
	if _, err := tx.ExecContext(ctx, `INSERT INTO spent_refresh_tokens (token_hash, user_id, device_id, spent_ts)
		SELECT token_hash, user_id, device_id, $2 FROM refresh_tokens WHERE token_hash = $1
		ON CONFLICT (token_hash) DO NOTHING`, prevHash, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("recording spent refresh token: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE token_hash = $1`, prevHash); err != nil {
		return fmt.Errorf("revoking refresh token: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM access_tokens WHERE refresh_hash = $1`, prevHash); err != nil {
		return fmt.Errorf("revoking old access tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE access_tokens SET prev_refresh_hash = NULL WHERE prev_refresh_hash = $1`, prevHash); err != nil {
		return fmt.Errorf("marking access token used: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET prev_hash = NULL WHERE prev_hash = $1`, prevHash); err != nil {
		return fmt.Errorf("marking refresh token used: %w", err)
	}
	return nil
}

// UserDeactivated reports whether a user is deactivated, inside a transaction.
func UserDeactivated(ctx context.Context, tx *sql.Tx, userID string) (bool, error) {
	var d bool
	err := tx.QueryRowContext(ctx, `SELECT deactivated FROM users WHERE user_id = $1`, userID).Scan(&d)
	if errors.Is(err, sql.ErrNoRows) {
		return false, ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("checking deactivation: %w", err)
	}
	return d, nil
}

// InsertLoginToken stores a single-use m.login.token token.
func InsertLoginToken(ctx context.Context, tx *sql.Tx, token, userID string, expiresTS int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		TokenHash(token), userID, expiresTS); err != nil {
		return fmt.Errorf("inserting login token: %w", err)
	}
	return nil
}

// TakeLoginToken deletes a login token and returns its user if it had not
// expired at now; exactly one caller can take a token.
func TakeLoginToken(ctx context.Context, tx *sql.Tx, token string, now int64) (string, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, now); err != nil {
		return "", fmt.Errorf("expiring login tokens: %w", err)
	}
	var userID string
	err := tx.QueryRowContext(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id`, TokenHash(token)).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("taking login token: %w", err)
	}
	return userID, nil
}
