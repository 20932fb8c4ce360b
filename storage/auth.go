package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// UIASession is a user-interactive authentication session.
type UIASession struct {
	SessionID         string
	Action            string
	UserID            string
	Flows             string // JSON
	Params            string // JSON
	RegistrationToken string
	ExpiresTS         int64
	Completed         []string
}

// InsertUIASession stores a new session.
func InsertUIASession(ctx context.Context, tx *sql.Tx, s UIASession, createdTS int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO uia_sessions (session_id, action, user_id, flows, params, created_ts, expires_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, s.SessionID, s.Action, s.UserID, s.Flows, s.Params, createdTS, s.ExpiresTS)
	if err != nil {
		return fmt.Errorf("inserting UIA session: %w", err)
	}
	return nil
}

// GetUIASession loads a session and its completed stages.
func (db *DB) GetUIASession(ctx context.Context, sessionID string) (UIASession, error) {
	s := UIASession{SessionID: sessionID}
	var tok sql.NullString
	err := db.read.QueryRowContext(ctx, `SELECT action, user_id, flows, params, registration_token, expires_ts
		FROM uia_sessions WHERE session_id = $1`, sessionID).Scan(&s.Action, &s.UserID, &s.Flows, &s.Params, &tok, &s.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("loading UIA session: %w", err)
	}
	s.RegistrationToken = tok.String
	s.Completed, err = queryColumn[string](ctx, db.read, "loading UIA stages", `SELECT stage FROM uia_stages WHERE session_id = $1 ORDER BY stage`, sessionID)
	return s, err
}

// CompleteUIAStage records a completed stage; completing it twice is harmless.
func CompleteUIAStage(ctx context.Context, tx *sql.Tx, sessionID, stage string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO uia_stages (session_id, stage) VALUES ($1, $2)
		ON CONFLICT (session_id, stage) DO NOTHING`, sessionID, stage)
	if err != nil {
		return fmt.Errorf("recording UIA stage: %w", err)
	}
	return nil
}

// HoldRegistrationToken counts the session as a pending use of token, if
// the token is still valid at now, and records it on the session. It
// reports false (and changes nothing) for an unknown, used-up or expired
// token, or when the session already holds a token. The conditional UPDATE
// is atomic in both engines, so concurrent sessions can never hold more
// uses than uses_allowed.
func HoldRegistrationToken(ctx context.Context, tx *sql.Tx, sessionID, token string, now int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE uia_sessions SET registration_token = $1
		WHERE session_id = $2 AND registration_token IS NULL`, token, sessionID)
	if err != nil {
		return false, fmt.Errorf("holding registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, nil
	}
	res, err = tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending + 1
		WHERE token = $1 AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
		AND (expiry_time IS NULL OR expiry_time > $2)`, token, now)
	if err != nil {
		return false, fmt.Errorf("holding registration token: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ConsumeUIASession deletes a session whose flow is complete, turning a held
// registration token's pending use into a completed one. ErrNotFound means
// another request consumed the session first.
func ConsumeUIASession(ctx context.Context, tx *sql.Tx, sessionID string) error {
	var tok sql.NullString
	err := tx.QueryRowContext(ctx, `DELETE FROM uia_sessions WHERE session_id = $1 RETURNING registration_token`, sessionID).Scan(&tok)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("consuming UIA session: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM uia_stages WHERE session_id = $1`, sessionID); err != nil {
		return fmt.Errorf("consuming UIA session: %w", err)
	}
	if tok.Valid {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending - 1, completed = completed + 1
			WHERE token = $1`, tok.String); err != nil {
			return fmt.Errorf("completing registration token use: %w", err)
		}
	}
	return nil
}

// ExpireUIASessions deletes sessions that expired before now and releases
// the registration token uses they held.
func ExpireUIASessions(ctx context.Context, tx *sql.Tx, now int64) error {
	var ids, toks []string
	err := queryEach(ctx, tx, "expiring UIA sessions", `DELETE FROM uia_sessions WHERE expires_ts < $1 RETURNING session_id, registration_token`, []any{now},
		func(rows *sql.Rows) error {
			var id string
			var tok sql.NullString
			if err := rows.Scan(&id, &tok); err != nil {
				return err
			}
			ids = append(ids, id)
			if tok.Valid {
				toks = append(toks, tok.String)
			}
			return nil
		})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM uia_stages WHERE session_id = $1`, id); err != nil {
			return fmt.Errorf("expiring UIA stages: %w", err)
		}
	}
	for _, tok := range toks {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, tok); err != nil {
			return fmt.Errorf("releasing registration token: %w", err)
		}
	}
	return nil
}

// RegistrationToken is a row of registration_tokens, shaped like Synapse's
// admin API objects.
type RegistrationToken struct {
	Token       string `json:"token"`
	UsesAllowed *int64 `json:"uses_allowed"`
	Pending     int64  `json:"pending"`
	Completed   int64  `json:"completed"`
	ExpiryTime  *int64 `json:"expiry_time"`
}

// Valid reports whether the token can still be used at now (ms).
func (t RegistrationToken) Valid(now int64) bool {
	return (t.UsesAllowed == nil || t.Pending+t.Completed < *t.UsesAllowed) && (t.ExpiryTime == nil || *t.ExpiryTime > now)
}

// InsertRegistrationToken creates a token; ErrConflict if it exists.
func InsertRegistrationToken(ctx context.Context, tx *sql.Tx, t RegistrationToken) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO registration_tokens (token, uses_allowed, pending, completed, expiry_time)
		VALUES ($1, $2, 0, 0, $3)`, t.Token, t.UsesAllowed, t.ExpiryTime)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting registration token: %w", err)
	}
	return nil
}

// UpdateRegistrationToken sets uses_allowed and/or expiry_time (a nil
// pointer-to-pointer leaves the field alone); ErrNotFound if missing.
func UpdateRegistrationToken(ctx context.Context, tx *sql.Tx, token string, usesAllowed, expiryTime **int64) error {
	if usesAllowed != nil {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET uses_allowed = $1 WHERE token = $2`, *usesAllowed, token); err != nil {
			return fmt.Errorf("updating registration token: %w", err)
		}
	}
	if expiryTime != nil {
		if _, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET expiry_time = $1 WHERE token = $2`, *expiryTime, token); err != nil {
			return fmt.Errorf("updating registration token: %w", err)
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM registration_tokens WHERE token = $1`, token).Scan(&n); err != nil {
		return fmt.Errorf("updating registration token: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteRegistrationToken removes a token; ErrNotFound if missing.
func DeleteRegistrationToken(ctx context.Context, tx *sql.Tx, token string) error {
	res, err := tx.ExecContext(ctx, `DELETE FROM registration_tokens WHERE token = $1`, token)
	if err != nil {
		return fmt.Errorf("deleting registration token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// GetRegistrationToken loads one token.
func (db *DB) GetRegistrationToken(ctx context.Context, token string) (RegistrationToken, error) {
	ts, err := db.listRegistrationTokens(ctx, `WHERE token = $1`, token)
	if err != nil {
		return RegistrationToken{}, err
	}
	if len(ts) == 0 {
		return RegistrationToken{}, ErrNotFound
	}
	return ts[0], nil
}

// ListRegistrationTokens lists every token, ordered by name.
func (db *DB) ListRegistrationTokens(ctx context.Context) ([]RegistrationToken, error) {
	return db.listRegistrationTokens(ctx, ``)
}

func (db *DB) listRegistrationTokens(ctx context.Context, where string, args ...any) ([]RegistrationToken, error) {
	return orEmpty(queryList(ctx, db.read, "listing registration tokens", `SELECT token, uses_allowed, pending, completed, expiry_time
		FROM registration_tokens `+where+` ORDER BY token`, func(rows *sql.Rows, t *RegistrationToken) error {
		var uses, exp sql.NullInt64
		if err := rows.Scan(&t.Token, &uses, &t.Pending, &t.Completed, &exp); err != nil {
			return err
		}
		if uses.Valid {
			t.UsesAllowed = &uses.Int64
		}
		if exp.Valid {
			t.ExpiryTime = &exp.Int64
		}
		return nil
	}, args...))
}
