package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// InsertOpenIDToken stores an OpenID token of userID valid until
// expiresTS, and drops the tokens that expired before now.
func InsertOpenIDToken(ctx context.Context, tx *sql.Tx, token, userID string, now, expiresTS int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, now); err != nil {
		return fmt.Errorf("expiring OpenID tokens: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		TokenHash(token), userID, expiresTS); err != nil {
		return fmt.Errorf("inserting OpenID token: %w", err)
	}
	return nil
}

// OpenIDTokenUser is the user of an OpenID token that has not expired at
// now and whose account is not deactivated; ErrNotFound otherwise. The
// lookup is by hash, so comparing tokens takes no secret-dependent time.
func OpenIDTokenUser(ctx context.Context, q Reader, token string, now int64) (string, error) {
	var userID string
	err := q.QueryRowContext(ctx, `SELECT o.user_id FROM openid_tokens o JOIN users u ON u.user_id = o.user_id
		WHERE o.token_hash = $1 AND o.expires_ts > $2 AND NOT u.deactivated`, TokenHash(token), now).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("looking up OpenID token: %w", err)
	}
	return userID, nil
}
