package storage

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
)

// SSORequest is a sign-in on its way through an upstream provider.
type SSORequest struct {
	IdPID, Nonce, Verifier, Next string
	// UIASession is the UIA session whose m.login.sso stage this sign-in
	// passes; empty for a sign-in.
	UIASession string
	ExpiresTS  int64
}

func stateKey(state string) string { return hex.EncodeToString(TokenHash(state)) }

// InsertSSORequest stores a sign-in under its state (hashed), dropping
// expired ones.
func InsertSSORequest(ctx context.Context, tx *sql.Tx, state string, r SSORequest, now int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM sso_requests WHERE expires_ts <= $1`, now); err != nil {
		return fmt.Errorf("expiring SSO requests: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO sso_requests (state_hash, idp_id, nonce, verifier, next_path, uia_session, expires_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, stateKey(state), r.IdPID, r.Nonce, r.Verifier, r.Next, r.UIASession, r.ExpiresTS); err != nil {
		return fmt.Errorf("inserting SSO request: %w", err)
	}
	return nil
}

// TakeSSORequest removes and returns the live sign-in of state at
// provider idpID: each state is answered once. ErrNotFound if there is
// none.
func TakeSSORequest(ctx context.Context, tx *sql.Tx, state, idpID string, now int64) (SSORequest, error) {
	r := SSORequest{IdPID: idpID}
	err := tx.QueryRowContext(ctx, `DELETE FROM sso_requests WHERE state_hash = $1 AND idp_id = $2 AND expires_ts > $3
		RETURNING nonce, verifier, next_path, uia_session, expires_ts`, stateKey(state), idpID, now).Scan(&r.Nonce, &r.Verifier, &r.Next, &r.UIASession, &r.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("taking SSO request: %w", err)
	}
	return r, nil
}

// SSOLinkedUser is the user an upstream identity signs in to; ErrNotFound
// if it is linked to none.
func SSOLinkedUser(ctx context.Context, q Reader, issuer, subject string) (string, error) {
	var userID string
	err := q.QueryRowContext(ctx, `SELECT user_id FROM sso_links WHERE issuer = $1 AND subject = $2`, issuer, subject).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up SSO link: %w", err)
	}
	return userID, nil
}

// InsertSSOLink links an upstream identity to a user; ErrConflict if the
// identity is linked already.
func InsertSSOLink(ctx context.Context, tx *sql.Tx, issuer, subject, idpID, userID string, now int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO sso_links (issuer, subject, idp_id, user_id, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		issuer, subject, idpID, userID, now)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting SSO link: %w", err)
	}
	return nil
}

// SSOLink is one upstream identity linked to a user.
type SSOLink struct{ IdPID, Subject string }

// SSOUserByProvider is the user the subject of provider idpID is linked
// to (the admin API's external ID lookup); ErrNotFound if none.
func SSOUserByProvider(ctx context.Context, q Reader, idpID, subject string) (string, error) {
	var userID string
	err := q.QueryRowContext(ctx, `SELECT user_id FROM sso_links WHERE idp_id = $1 AND subject = $2`, idpID, subject).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up SSO link: %w", err)
	}
	return userID, nil
}

// SSOLinksOfUser lists the upstream identities linked to a user, oldest first.
func SSOLinksOfUser(ctx context.Context, q Reader, userID string) ([]SSOLink, error) {
	return queryList(ctx, q, "loading SSO links", `SELECT idp_id, subject FROM sso_links WHERE user_id = $1 ORDER BY created_ts, idp_id, subject`,
		func(rows *sql.Rows, l *SSOLink) error { return rows.Scan(&l.IdPID, &l.Subject) }, userID)
}
