package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ThreePID is a third-party identifier bound to an account.
type ThreePID struct {
	Medium      string
	Address     string
	UserID      string
	ValidatedTS int64
	AddedTS     int64
}

// InsertThreePID binds an identifier to a user; ErrConflict if it is bound
// already (to anyone: the caller says whether that is "in use").
func InsertThreePID(ctx context.Context, tx *sql.Tx, t ThreePID) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO user_threepids (medium, address, user_id, validated_ts, added_ts)
		VALUES ($1, $2, $3, $4, $5)`, t.Medium, t.Address, t.UserID, t.ValidatedTS, t.AddedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting third-party identifier: %w", err)
	}
	return nil
}

// DeleteThreePID unbinds an identifier from a user; ErrNotFound if the
// user had no such identifier.
func DeleteThreePID(ctx context.Context, tx *sql.Tx, userID, medium, address string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM user_threepids WHERE user_id = $1 AND medium = $2 AND address = $3`,
		userID, medium, address)
	if err != nil {
		return fmt.Errorf("deleting third-party identifier: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteThreePIDsOfUser unbinds every identifier of a user (deactivation).
func DeleteThreePIDsOfUser(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM user_threepids WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("deleting third-party identifiers: %w", err)
	}
	return nil
}

// ThreePIDsOfUser lists a user's identifiers, oldest first.
func ThreePIDsOfUser(ctx context.Context, q Reader, userID string) ([]ThreePID, error) {
	return queryList(ctx, q, "loading third-party identifiers", `SELECT medium, address, user_id, validated_ts, added_ts
		FROM user_threepids WHERE user_id = $1 ORDER BY added_ts, address`,
		func(rows *sql.Rows, t *ThreePID) error {
			return rows.Scan(&t.Medium, &t.Address, &t.UserID, &t.ValidatedTS, &t.AddedTS)
		}, userID)
}

// UserOfThreePID is the user an identifier is bound to; ErrNotFound if none.
func UserOfThreePID(ctx context.Context, q Reader, medium, address string) (string, error) {
	var userID string
	err := q.QueryRowContext(ctx, `SELECT user_id FROM user_threepids WHERE medium = $1 AND address = $2`,
		medium, address).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up third-party identifier: %w", err)
	}
	return userID, nil
}

// ThreePIDSession is a validation session of an identifier: requestToken
// made it, the token mailed to the address validates it.
type ThreePIDSession struct {
	SessionID      string
	Medium         string
	Address        string
	Purpose        string
	SendAttempt    int64
	TokenExpiresTS int64
	NextLink       string
	ValidatedTS    int64 // 0 until validated
	UIASession     string
	ExpiresTS      int64
}

// ThreePIDSessionBySecret finds the session of a client secret for an
// address and purpose (requestToken called again); ErrNotFound if none is
// live at now.
func ThreePIDSessionBySecret(ctx context.Context, q Reader, clientSecret, medium, address, purpose string, now int64) (ThreePIDSession, error) {
	return scanThreePIDSession(q.QueryRowContext(ctx, threePIDSessionColumns+` WHERE client_secret_hash = $1
		AND medium = $2 AND address = $3 AND purpose = $4 AND expires_ts > $5`,
		TokenHash(clientSecret), medium, address, purpose, now))
}

// ThreePIDSessionByID finds a live session by its ID and client secret;
// ErrNotFound if either is wrong or it expired. The secret is compared
// by hash in the query, so its timing tells nothing about the secret.
func ThreePIDSessionByID(ctx context.Context, q Reader, sessionID, clientSecret string, now int64) (ThreePIDSession, error) {
	return scanThreePIDSession(q.QueryRowContext(ctx, threePIDSessionColumns+` WHERE session_id = $1
		AND client_secret_hash = $2 AND expires_ts > $3`, sessionID, TokenHash(clientSecret), now))
}

// ThreePIDSessionOfUIA is the validated session that completed an email
// stage of a UIA session; ErrNotFound if there is none.
func ThreePIDSessionOfUIA(ctx context.Context, q Reader, uiaSession string) (ThreePIDSession, error) {
	return scanThreePIDSession(q.QueryRowContext(ctx, threePIDSessionColumns+` WHERE uia_session = $1
		AND validated_ts > 0 ORDER BY validated_ts DESC LIMIT 1`, uiaSession))
}

const threePIDSessionColumns = `SELECT session_id, medium, address, purpose, send_attempt, token_expires_ts,
	next_link, validated_ts, uia_session, expires_ts FROM threepid_sessions`

func scanThreePIDSession(row *sql.Row) (ThreePIDSession, error) {
	var s ThreePIDSession
	err := row.Scan(&s.SessionID, &s.Medium, &s.Address, &s.Purpose, &s.SendAttempt, &s.TokenExpiresTS,
		&s.NextLink, &s.ValidatedTS, &s.UIASession, &s.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("loading validation session: %w", err)
	}
	return s, nil
}

// InsertThreePIDSession stores a new session with the hashes of its client
// secret and token, and drops sessions that expired before now.
func InsertThreePIDSession(ctx context.Context, tx *sql.Tx, s ThreePIDSession, clientSecret, token string, now int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM threepid_sessions WHERE expires_ts <= $1`, now); err != nil {
		return fmt.Errorf("expiring validation sessions: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO threepid_sessions (session_id, client_secret_hash, medium, address, purpose,
		send_attempt, token_hash, token_expires_ts, next_link, expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		s.SessionID, TokenHash(clientSecret), s.Medium, s.Address, s.Purpose, s.SendAttempt, TokenHash(token),
		s.TokenExpiresTS, s.NextLink, s.ExpiresTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting validation session: %w", err)
	}
	return nil
}

// RenewThreePIDSessionToken replaces the token of a session that is sent
// again (a higher send_attempt).
func RenewThreePIDSessionToken(ctx context.Context, tx *sql.Tx, sessionID string, sendAttempt int64, token string, tokenExpiresTS int64, nextLink string) error {
	_, err := tx.ExecContext(ctx, `UPDATE threepid_sessions SET send_attempt = $2, token_hash = $3, token_expires_ts = $4,
		next_link = $5 WHERE session_id = $1`, sessionID, sendAttempt, TokenHash(token), tokenExpiresTS, nextLink)
	if err != nil {
		return fmt.Errorf("renewing validation token: %w", err)
	}
	return nil
}

// ValidateThreePIDSession marks a session validated if token is its
// current, unexpired token; ErrNotFound otherwise. Validating twice is
// fine: the first time stays.
func ValidateThreePIDSession(ctx context.Context, tx *sql.Tx, sessionID, clientSecret, token string, now int64) (ThreePIDSession, error) {
	res, err := tx.ExecContext(ctx, `UPDATE threepid_sessions SET validated_ts = $5
		WHERE session_id = $1 AND client_secret_hash = $2 AND token_hash = $3 AND token_expires_ts > $4
		AND expires_ts > $4 AND validated_ts = 0`,
		sessionID, TokenHash(clientSecret), TokenHash(token), now, now)
	if err != nil {
		return ThreePIDSession{}, fmt.Errorf("validating session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Already validated with this token, or a wrong token.
		var s ThreePIDSession
		s, err = scanThreePIDSession(tx.QueryRowContext(ctx, threePIDSessionColumns+` WHERE session_id = $1
			AND client_secret_hash = $2 AND token_hash = $3 AND validated_ts > 0 AND expires_ts > $4`,
			sessionID, TokenHash(clientSecret), TokenHash(token), now))
		return s, err
	}
	return scanThreePIDSession(tx.QueryRowContext(ctx, threePIDSessionColumns+` WHERE session_id = $1`, sessionID))
}

// AttachThreePIDSession records that a validated session completed a stage
// of a UIA session, so the request the UIA session authorises can find the
// address.
func AttachThreePIDSession(ctx context.Context, tx *sql.Tx, sessionID, uiaSession string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE threepid_sessions SET uia_session = $2 WHERE session_id = $1`,
		sessionID, uiaSession); err != nil {
		return fmt.Errorf("attaching validation session: %w", err)
	}
	return nil
}

// DeleteThreePIDSession ends a session once it has been used, so one
// validation adds one identifier or resets one password.
func DeleteThreePIDSession(ctx context.Context, tx *sql.Tx, sessionID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM threepid_sessions WHERE session_id = $1`, sessionID); err != nil {
		return fmt.Errorf("deleting validation session: %w", err)
	}
	return nil
}
