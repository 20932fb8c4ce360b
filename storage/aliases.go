package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// InsertAlias maps a room alias to a room; ErrConflict if it is taken.
func InsertAlias(ctx context.Context, tx *sql.Tx, alias, roomID, creator string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO room_aliases (alias, room_id, creator, created_ts) VALUES ($1, $2, $3, $4)`,
		alias, roomID, creator, nowMillis())
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting alias: %w", err)
	}
	return nil
}

// ResolveAlias returns the room an alias points to.
func ResolveAlias(ctx context.Context, q Reader, alias string) (roomID, creator string, err error) {
	err = q.QueryRowContext(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return roomID, creator, err
}

// DeleteAlias removes an alias.
func DeleteAlias(ctx context.Context, tx *sql.Tx, alias string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// AliasesOfRoom lists a room's local aliases.
func AliasesOfRoom(ctx context.Context, q Reader, roomID string) ([]string, error) {
	return orEmpty(queryColumn[string](ctx, q, "listing aliases", `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID))
}

// ForgetRoom records that a user forgot a room they left.
func (db *DB) ForgetRoom(ctx context.Context, userID, roomID string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
		return err
	})
}
