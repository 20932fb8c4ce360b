package storage

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
)

// User is an account row.
type User struct {
	UserID       string
	Localpart    string
	PasswordHash string // empty: no password
	IsAdmin      bool
	IsGuest      bool
	UserType     string
	Deactivated  bool
	Locked       bool // account locking (v1.12): every request but logout is refused
	Suspended    bool // account suspension (v1.13): writes to rooms and profile are refused
	CreatedTS    int64
}

// Device is one login of a user, with its own token and (later) keys.
type Device struct {
	UserID      string
	DeviceID    string
	DisplayName *string
	CreatedTS   int64
	LastSeenTS  *int64
	LastSeenIP  *string
}

// TokenHash hashes an access token for storage and lookup. Tokens are 256
// random bits, so a fast hash is enough: there is nothing to brute-force.
func TokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// InsertUser creates a user and its profile row; ErrConflict if the ID is taken.
func InsertUser(ctx context.Context, tx *sql.Tx, u User, displayName string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO users (user_id, localpart, password_hash, is_admin, is_guest, user_type, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		u.UserID, u.Localpart, nullString(u.PasswordHash), u.IsAdmin, u.IsGuest, nullString(u.UserType), u.CreatedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting user: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO profiles (user_id, displayname) VALUES ($1, $2)`, u.UserID, nullString(displayName)); err != nil {
		return fmt.Errorf("inserting profile: %w", err)
	}
	return nil
}

// GetUser loads a user by full ID.
func (db *DB) GetUser(ctx context.Context, userID string) (User, error) {
	var u User
	var hash, userType sql.NullString
	err := db.read.QueryRowContext(ctx, `SELECT user_id, localpart, password_hash, is_admin, is_guest, user_type, deactivated, locked, suspended, created_ts
		FROM users WHERE user_id = $1`, userID).
		Scan(&u.UserID, &u.Localpart, &hash, &u.IsAdmin, &u.IsGuest, &userType, &u.Deactivated, &u.Locked, &u.Suspended, &u.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("loading user: %w", err)
	}
	u.PasswordHash, u.UserType = hash.String, userType.String
	return u, nil
}

// UserExists reports whether a localpart is taken (deactivated users keep it).
func (db *DB) UserExists(ctx context.Context, localpart string) (bool, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM users WHERE localpart = $1`, localpart).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("checking user: %w", err)
	}
	return n > 0, nil
}

// UpsertDevice creates a device or, when the device ID exists for the user,
// keeps it (the spec lets a login reuse its device_id) and updates the name
// if one is given.
func UpsertDevice(ctx context.Context, tx *sql.Tx, d Device) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO devices (user_id, device_id, display_name, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = COALESCE(excluded.display_name, devices.display_name)`,
		d.UserID, d.DeviceID, d.DisplayName, d.CreatedTS, d.LastSeenTS, d.LastSeenIP)
	if err != nil {
		return fmt.Errorf("upserting device: %w", err)
	}
	return nil
}

// AccessToken is a new access token row.
type AccessToken struct {
	Token     string
	UserID    string
	DeviceID  string
	CreatedTS int64
	ExpiresTS int64 // 0: never
	// RefreshToken is the refresh token issued with it, if any.
	RefreshToken string
	// PrevRefreshHash is the hash of the refresh token exchanged for it, if
	// any: revoked when this access token is first used.
	PrevRefreshHash []byte
}

// InsertAccessToken stores the hash of a new access token for a device.
func InsertAccessToken(ctx context.Context, tx *sql.Tx, t AccessToken) error {
	var exp any
	if t.ExpiresTS > 0 {
		exp = t.ExpiresTS
	}
	var rh any
	if t.RefreshToken != "" {
		rh = TokenHash(t.RefreshToken)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO access_tokens (token_hash, user_id, device_id, created_ts, expires_ts, refresh_hash, prev_refresh_hash)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, TokenHash(t.Token), t.UserID, t.DeviceID, t.CreatedTS, exp, rh, nullBytes(t.PrevRefreshHash))
	if err != nil {
		return fmt.Errorf("inserting access token: %w", err)
	}
	return nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// TokenOwner is who an access token belongs to.
type TokenOwner struct {
	UserID    string
	DeviceID  string
	ExpiresTS int64 // 0: never
	IsGuest   bool
	Locked    bool // the account is locked (v1.12)
	Suspended bool // the account is suspended (v1.13)
	// ShadowBanned and MessageLimit (nil: none) are the admin's moderation
	// of the account (clientapi's limitMessage), read with the token so a
	// send needs no query of its own for them.
	ShadowBanned bool
	MessageLimit *RatelimitOverride
	// PrevRefreshHash is set until the token's first use (see AccessToken).
	PrevRefreshHash []byte
}

// LookupAccessToken finds the device an access token belongs to. The row is
// found by the token's hash; the final comparison is constant-time.
func (db *DB) LookupAccessToken(ctx context.Context, token string) (TokenOwner, error) {
	want := TokenHash(token)
	var o TokenOwner
	var got []byte
	var exp, mps, burst sql.NullInt64
	err := db.read.QueryRowContext(ctx, `SELECT t.token_hash, t.user_id, t.device_id, t.expires_ts, u.is_guest, u.locked, u.suspended, t.prev_refresh_hash,
			u.shadow_banned, o.messages_per_second, o.burst_count
		FROM access_tokens t JOIN users u ON u.user_id = t.user_id LEFT JOIN ratelimit_overrides o ON o.user_id = t.user_id
		WHERE t.token_hash = $1 AND NOT u.deactivated`, want).Scan(&got, &o.UserID, &o.DeviceID, &exp, &o.IsGuest, &o.Locked, &o.Suspended, &o.PrevRefreshHash,
		&o.ShadowBanned, &mps, &burst)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("looking up access token: %w", err)
	}
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return TokenOwner{}, ErrNotFound
	}
	o.ExpiresTS = exp.Int64
	if mps.Valid {
		o.MessageLimit = &RatelimitOverride{MessagesPerSecond: mps.Int64, BurstCount: burst.Int64}
	}
	return o, nil
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// TouchDevice records when and from where a device was last seen.
func (db *DB) TouchDevice(ctx context.Context, userID, deviceID string, ts int64, ip string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 WHERE user_id = $3 AND device_id = $4`,
			ts, ip, userID, deviceID)
		return err
	})
}
