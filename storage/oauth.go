package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The OAuth 2.0 authorization server's tables (migration 0028). Its access
// and refresh tokens live in access_tokens and refresh_tokens like every
// other login's.

// InsertOAuthClient stores a registered client's metadata (JSON).
func InsertOAuthClient(ctx context.Context, tx *sql.Tx, clientID, metadata string, now int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_clients (client_id, metadata, created_ts) VALUES ($1, $2, $3)`,
		clientID, metadata, now); err != nil {
		return fmt.Errorf("inserting OAuth client: %w", err)
	}
	return nil
}

// OAuthClient returns a registered client's metadata; ErrNotFound if none.
func (db *DB) OAuthClient(ctx context.Context, clientID string) (string, error) {
	var md string
	err := db.read.QueryRowContext(ctx, `SELECT metadata FROM oauth_clients WHERE client_id = $1`, clientID).Scan(&md)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading OAuth client: %w", err)
	}
	return md, nil
}

// OAuthAuthRequest is an authorization request (RFC 6749 section 4.1.1)
// waiting for the user, then the code it produced.
type OAuthAuthRequest struct {
	RequestID, ClientID, RedirectURI, Scope, DeviceID string
	State, ResponseMode, CodeChallenge, Prompt        string
	CreatedTS, ExpiresTS                              int64
	UserID                                            string // set once granted
	CodeExpiresTS                                     int64
}

const authRequestColumns = `request_id, client_id, redirect_uri, scope, device_id, state, response_mode, code_challenge, prompt,
	created_ts, expires_ts, COALESCE(user_id, ''), COALESCE(code_expires_ts, 0)`

func scanAuthRequest(row interface{ Scan(...any) error }) (OAuthAuthRequest, error) {
	var r OAuthAuthRequest
	err := row.Scan(&r.RequestID, &r.ClientID, &r.RedirectURI, &r.Scope, &r.DeviceID, &r.State, &r.ResponseMode,
		&r.CodeChallenge, &r.Prompt, &r.CreatedTS, &r.ExpiresTS, &r.UserID, &r.CodeExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("loading OAuth authorization request: %w", err)
	}
	return r, nil
}

// InsertOAuthAuthRequest stores a new authorization request, dropping
// expired requests, browser sessions and device grants on the way.
func InsertOAuthAuthRequest(ctx context.Context, tx *sql.Tx, r OAuthAuthRequest) error {
	if err := expireOAuth(ctx, tx, r.CreatedTS); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_auth_requests (request_id, client_id, redirect_uri, scope, device_id, state,
		response_mode, code_challenge, prompt, created_ts, expires_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		r.RequestID, r.ClientID, r.RedirectURI, r.Scope, r.DeviceID, r.State, r.ResponseMode, r.CodeChallenge, r.Prompt,
		r.CreatedTS, r.ExpiresTS); err != nil {
		return fmt.Errorf("inserting OAuth authorization request: %w", err)
	}
	return nil
}

func expireOAuth(ctx context.Context, tx *sql.Tx, now int64) error {
	for _, q := range []string{
		`DELETE FROM oauth_auth_requests WHERE expires_ts < $1`,
		`DELETE FROM oauth_browser_sessions WHERE expires_ts < $1`,
		`DELETE FROM oauth_device_grants WHERE expires_ts < $1`,
	} {
		if _, err := tx.ExecContext(ctx, q, now); err != nil {
			return fmt.Errorf("expiring OAuth rows: %w", err)
		}
	}
	return nil
}

// OAuthAuthRequestByID loads a pending authorization request.
func (db *DB) OAuthAuthRequestByID(ctx context.Context, id string) (OAuthAuthRequest, error) {
	return scanAuthRequest(db.read.QueryRowContext(ctx, `SELECT `+authRequestColumns+` FROM oauth_auth_requests WHERE request_id = $1`, id))
}

// GrantOAuthAuthRequest records the user's consent and the code's hash on
// a request not granted before; false if it was (or is gone).
func GrantOAuthAuthRequest(ctx context.Context, tx *sql.Tx, id, userID string, codeHash []byte, codeExpiresTS int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE oauth_auth_requests SET user_id = $1, code_hash = $2, code_expires_ts = $3
		WHERE request_id = $4 AND user_id IS NULL`, userID, codeHash, codeExpiresTS, id)
	if err != nil {
		return false, fmt.Errorf("granting OAuth authorization request: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// DeleteOAuthAuthRequest forgets a request (denied, or its code used).
func DeleteOAuthAuthRequest(ctx context.Context, tx *sql.Tx, id string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_auth_requests WHERE request_id = $1`, id); err != nil {
		return fmt.Errorf("deleting OAuth authorization request: %w", err)
	}
	return nil
}

// TakeOAuthCode finds the request of an authorization code and marks the
// code used. used reports that it had been used before (RFC 6749 section
// 4.1.2: a code is single use, and a second use revokes what the first
// gave). ErrNotFound for an unknown code.
func TakeOAuthCode(ctx context.Context, tx *sql.Tx, code string) (r OAuthAuthRequest, used bool, err error) {
	h := TokenHash(code)
	r, err = scanAuthRequest(tx.QueryRowContext(ctx, `SELECT `+authRequestColumns+` FROM oauth_auth_requests WHERE code_hash = $1`, h))
	if err != nil {
		return r, false, err
	}
	res, err := tx.ExecContext(ctx, `UPDATE oauth_auth_requests SET code_used = TRUE WHERE code_hash = $1 AND NOT code_used`, h)
	if err != nil {
		return r, false, fmt.Errorf("using OAuth code: %w", err)
	}
	n, _ := res.RowsAffected()
	return r, n == 0, nil
}

// InsertBrowserSession stores a signed-in browser's session token, hashed.
func InsertBrowserSession(ctx context.Context, tx *sql.Tx, token, userID string, now, expiresTS int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_browser_sessions (session_hash, user_id, created_ts, expires_ts)
		VALUES ($1, $2, $3, $4)`, TokenHash(token), userID, now, expiresTS); err != nil {
		return fmt.Errorf("inserting browser session: %w", err)
	}
	return nil
}

// BrowserSessionUser is the user of a live browser session whose account
// is neither deactivated nor locked; ErrNotFound otherwise.
func (db *DB) BrowserSessionUser(ctx context.Context, token string, now int64) (string, error) {
	var userID string
	err := db.read.QueryRowContext(ctx, `SELECT s.user_id FROM oauth_browser_sessions s JOIN users u ON u.user_id = s.user_id
		WHERE s.session_hash = $1 AND s.expires_ts > $2 AND NOT u.deactivated AND NOT u.locked`, TokenHash(token), now).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading browser session: %w", err)
	}
	return userID, nil
}

// DeleteBrowserSession signs a browser out.
func DeleteBrowserSession(ctx context.Context, tx *sql.Tx, token string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE session_hash = $1`, TokenHash(token)); err != nil {
		return fmt.Errorf("deleting browser session: %w", err)
	}
	return nil
}

// DeleteUserBrowserSessions signs every browser of a user out.
func DeleteUserBrowserSessions(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_browser_sessions WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("deleting browser sessions: %w", err)
	}
	return nil
}

// UpsertOAuthSession records that a device's tokens were granted to a client.
func UpsertOAuthSession(ctx context.Context, tx *sql.Tx, userID, deviceID, clientID, scope string, now int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_sessions (user_id, device_id, client_id, scope, created_ts) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, device_id) DO UPDATE SET client_id = excluded.client_id, scope = excluded.scope, created_ts = excluded.created_ts`,
		userID, deviceID, clientID, scope, now); err != nil {
		return fmt.Errorf("recording OAuth session: %w", err)
	}
	return nil
}

// OAuthSession is the client and scope a device was granted to;
// ErrNotFound for a device that did not sign in through OAuth.
func OAuthSession(ctx context.Context, q Reader, userID, deviceID string) (clientID, scope string, err error) {
	err = q.QueryRowContext(ctx, `SELECT client_id, scope FROM oauth_sessions WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&clientID, &scope)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("loading OAuth session: %w", err)
	}
	return clientID, scope, nil
}

// OAuthSessionClients maps the user's OAuth-signed-in devices to their client IDs.
func (db *DB) OAuthSessionClients(ctx context.Context, userID string) (map[string]string, error) {
	return queryMap[string, string](ctx, db.read, "listing OAuth sessions",
		`SELECT device_id, client_id FROM oauth_sessions WHERE user_id = $1`, userID)
}

// DeleteOAuthSessions forgets the OAuth sessions of deleted devices.
func DeleteOAuthSessions(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
	for _, id := range deviceIDs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM oauth_sessions WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
			return fmt.Errorf("deleting OAuth session: %w", err)
		}
	}
	return nil
}

// SpentRefreshToken is the device of a refresh token whose generation was
// replaced; ErrNotFound if the token was never spent.
func SpentRefreshToken(ctx context.Context, tx *sql.Tx, token string) (userID, deviceID string, err error) {
	err = tx.QueryRowContext(ctx, `SELECT user_id, device_id FROM spent_refresh_tokens WHERE token_hash = $1`,
		TokenHash(token)).Scan(&userID, &deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("looking up spent refresh token: %w", err)
	}
	return userID, deviceID, nil
}

// OAuthTokenDevice is the device of a live access or refresh token;
// ErrNotFound if it is neither.
func OAuthTokenDevice(ctx context.Context, tx *sql.Tx, token string) (userID, deviceID string, err error) {
	h := TokenHash(token)
	err = tx.QueryRowContext(ctx, `SELECT user_id, device_id FROM access_tokens WHERE token_hash = $1
		UNION ALL SELECT user_id, device_id FROM refresh_tokens WHERE token_hash = $1`, h).Scan(&userID, &deviceID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	if err != nil {
		return "", "", fmt.Errorf("looking up token: %w", err)
	}
	return userID, deviceID, nil
}

// UseRegistrationToken counts one completed use of a registration token
// that is valid at now; false (and nothing changed) otherwise.
func UseRegistrationToken(ctx context.Context, tx *sql.Tx, token string, now int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE registration_tokens SET completed = completed + 1
		WHERE token = $1 AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
		AND (expiry_time IS NULL OR expiry_time > $2)`, token, now)
	if err != nil {
		return false, fmt.Errorf("using registration token: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// OAuthDeviceGrant is a device authorization grant (RFC 8628).
type OAuthDeviceGrant struct {
	UserCode, ClientID, Scope, DeviceID string
	CreatedTS, ExpiresTS, LastPollTS    int64
	Status                              string // pending, approved, denied, done
	UserID                              string
}

const deviceGrantColumns = `user_code, client_id, scope, device_id, created_ts, expires_ts, last_poll_ts, status, COALESCE(user_id, '')`

func scanDeviceGrant(row interface{ Scan(...any) error }) (OAuthDeviceGrant, error) {
	var g OAuthDeviceGrant
	err := row.Scan(&g.UserCode, &g.ClientID, &g.Scope, &g.DeviceID, &g.CreatedTS, &g.ExpiresTS, &g.LastPollTS, &g.Status, &g.UserID)
	if errors.Is(err, sql.ErrNoRows) {
		return g, ErrNotFound
	}
	if err != nil {
		return g, fmt.Errorf("loading device grant: %w", err)
	}
	return g, nil
}

// InsertDeviceGrant stores a new pending device grant; ErrConflict when
// the user code is taken (the caller draws another).
func InsertDeviceGrant(ctx context.Context, tx *sql.Tx, deviceCode string, g OAuthDeviceGrant) error {
	if err := expireOAuth(ctx, tx, g.CreatedTS); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO oauth_device_grants (device_code_hash, user_code, client_id, scope, device_id, created_ts, expires_ts, status)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')`, TokenHash(deviceCode), g.UserCode, g.ClientID, g.Scope, g.DeviceID, g.CreatedTS, g.ExpiresTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting device grant: %w", err)
	}
	return nil
}

// DeviceGrantByUserCode loads a grant by the code the user typed.
func (db *DB) DeviceGrantByUserCode(ctx context.Context, userCode string) (OAuthDeviceGrant, error) {
	return scanDeviceGrant(db.read.QueryRowContext(ctx, `SELECT `+deviceGrantColumns+` FROM oauth_device_grants WHERE user_code = $1`, userCode))
}

// DecideDeviceGrant approves (userID set) or denies a pending grant; false
// if it was no longer pending.
func DecideDeviceGrant(ctx context.Context, tx *sql.Tx, userCode, status, userID string) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE oauth_device_grants SET status = $1, user_id = $2 WHERE user_code = $3 AND status = 'pending'`,
		status, nullString(userID), userCode)
	if err != nil {
		return false, fmt.Errorf("deciding device grant: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// PollDeviceGrant loads a grant by its device code and records the poll
// at now (the returned LastPollTS is the poll before it).
func PollDeviceGrant(ctx context.Context, tx *sql.Tx, deviceCode string, now int64) (OAuthDeviceGrant, error) {
	h := TokenHash(deviceCode)
	g, err := scanDeviceGrant(tx.QueryRowContext(ctx, `SELECT `+deviceGrantColumns+` FROM oauth_device_grants WHERE device_code_hash = $1`, h))
	if err != nil {
		return g, err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE oauth_device_grants SET last_poll_ts = $1 WHERE device_code_hash = $2`, now, h); err != nil {
		return g, fmt.Errorf("recording device grant poll: %w", err)
	}
	return g, nil
}

// FinishDeviceGrant marks an approved grant done; false if it was not
// approved (or already done: tokens are issued once).
func FinishDeviceGrant(ctx context.Context, tx *sql.Tx, deviceCode string) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE oauth_device_grants SET status = 'done' WHERE device_code_hash = $1 AND status = 'approved'`,
		TokenHash(deviceCode))
	if err != nil {
		return false, fmt.Errorf("finishing device grant: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ApproveCrossSigningReset records the user's approval until untilTS.
func ApproveCrossSigningReset(ctx context.Context, tx *sql.Tx, userID string, untilTS int64) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO oauth_cross_signing_resets (user_id, approved_until_ts) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET approved_until_ts = excluded.approved_until_ts`, userID, untilTS); err != nil {
		return fmt.Errorf("approving cross-signing reset: %w", err)
	}
	return nil
}

// TakeCrossSigningReset uses up the user's approval if it is still valid
// at now; false if there is none.
func TakeCrossSigningReset(ctx context.Context, tx *sql.Tx, userID string, now int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM oauth_cross_signing_resets WHERE user_id = $1 AND approved_until_ts >= $2`, userID, now)
	if err != nil {
		return false, fmt.Errorf("using cross-signing reset approval: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
