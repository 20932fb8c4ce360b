package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// InsertFilter stores a user's filter (JSON) and returns its ID.
func (db *DB) InsertFilter(ctx context.Context, userID string, filter []byte) (string, error) {
	var id int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO filters (user_id, filter) VALUES ($1, $2) RETURNING filter_id`,
			userID, string(filter)).Scan(&id)
	})
	if err != nil {
		return "", fmt.Errorf("storing filter: %w", err)
	}
	return strconv.FormatInt(id, 10), nil
}

// GetFilter loads one of the user's filters; ErrNotFound if the user has no
// filter with that ID.
func (db *DB) GetFilter(ctx context.Context, userID, filterID string) ([]byte, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil || strconv.FormatInt(id, 10) != filterID {
		return nil, ErrNotFound // not an ID we hand out
	}
	var filter string
	err = db.read.QueryRowContext(ctx, `SELECT filter FROM filters WHERE filter_id = $1 AND user_id = $2`, id, userID).Scan(&filter)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading filter: %w", err)
	}
	return []byte(filter), nil
}
