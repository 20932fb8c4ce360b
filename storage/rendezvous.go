package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Rendezvous is a live rendezvous session (MSC4388).
type Rendezvous struct {
	ID, Data, SequenceToken string
	ExpiresTS               int64
}

// InsertRendezvous stores a new session, dropping expired ones.
func InsertRendezvous(ctx context.Context, tx *sql.Tx, r Rendezvous, now int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM rendezvous_sessions WHERE expires_ts <= $1`, now); err != nil {
		return fmt.Errorf("expiring rendezvous sessions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO rendezvous_sessions (rendezvous_id, data, sequence_token, expires_ts) VALUES ($1, $2, $3, $4)`,
		r.ID, r.Data, r.SequenceToken, r.ExpiresTS); err != nil {
		return fmt.Errorf("inserting rendezvous session: %w", err)
	}
	return nil
}

// GetRendezvous loads a session that has not expired at now; ErrNotFound
// otherwise.
func GetRendezvous(ctx context.Context, q Reader, id string, now int64) (Rendezvous, error) {
	r := Rendezvous{ID: id}
	err := q.QueryRowContext(ctx, `SELECT data, sequence_token, expires_ts FROM rendezvous_sessions WHERE rendezvous_id = $1 AND expires_ts > $2`,
		id, now).Scan(&r.Data, &r.SequenceToken, &r.ExpiresTS)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("loading rendezvous session: %w", err)
	}
	return r, nil
}

// SwapRendezvous replaces the payload if the session's sequence token is
// still prev (compare-and-swap); false if it is not (or the session is gone).
func SwapRendezvous(ctx context.Context, tx *sql.Tx, id, prev, next, data string, now int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE rendezvous_sessions SET data = $1, sequence_token = $2
		WHERE rendezvous_id = $3 AND sequence_token = $4 AND expires_ts > $5`, data, next, id, prev, now)
	if err != nil {
		return false, fmt.Errorf("updating rendezvous session: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// DeleteRendezvous cancels a live session; false if there was none.
func DeleteRendezvous(ctx context.Context, tx *sql.Tx, id string, now int64) (bool, error) {
	res, err := tx.ExecContext(ctx, `DELETE FROM rendezvous_sessions WHERE rendezvous_id = $1 AND expires_ts > $2`, id, now)
	if err != nil {
		return false, fmt.Errorf("deleting rendezvous session: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}
