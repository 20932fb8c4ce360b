package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
)

// ServerNoticeRoom is the user's server notices room; ErrNotFound if none
// was made yet.
func ServerNoticeRoom(ctx context.Context, q Reader, userID string) (string, error) {
	var roomID string
	err := q.QueryRowContext(ctx, `SELECT room_id FROM server_notice_rooms WHERE user_id = $1`, userID).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading server notices room: %w", err)
	}
	return roomID, nil
}

// SetServerNoticeRoom records the user's server notices room.
func (db *DB) SetServerNoticeRoom(ctx context.Context, userID, roomID string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO server_notice_rooms (user_id, room_id) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET room_id = excluded.room_id`, userID, roomID)
		if err != nil {
			return fmt.Errorf("storing server notices room: %w", err)
		}
		return nil
	})
}

// serverNoticesLockClass is the first key of the two-key session locks
// that serialise making one user's notices room (clusterLockClass is the
// leaders').
const serverNoticesLockClass = 7460131

// LockServerNoticeRoom holds, until unlock is called, a lock on making or
// mending userID's notices room that every process on the same PostgreSQL
// database waits for (a session advisory lock keyed by a hash of the user
// ID, on a connection of its own so that no pooled connection is held
// while the room is made; the lock ends with the connection). SQLite
// serves one process, whose own mutex is enough.
func (db *DB) LockServerNoticeRoom(ctx context.Context, userID string) (unlock func(), err error) {
	if db.dialect != Postgres {
		return func() {}, nil
	}
	c, err := db.ConnectSession(ctx)
	if err != nil {
		return nil, err
	}
	h := fnv.New32a()
	h.Write([]byte(userID))
	if _, err := c.conn.Exec(ctx, "SELECT pg_advisory_lock($1, $2)", int32(serverNoticesLockClass), int32(h.Sum32())); err != nil {
		c.Close()
		return nil, fmt.Errorf("locking the server notices room: %w", err)
	}
	return c.Close, nil
}
