package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Sliding sync connections (MSC4186). The connection state is opaque to
// storage: a JSON document per position.

const (
	// slidingKeepPositions is how many positions of one connection are
	// kept: the one a client continues from plus a few newer ones made by
	// retried or cancelled requests.
	slidingKeepPositions = 5
	// slidingMaxConnsPerDevice bounds the connections of one device.
	slidingMaxConnsPerDevice = 10
)

// SlidingConn names one connection.
type SlidingConn struct {
	UserID, DeviceID, ConnID string
}

// LoadSlidingPos returns the state stored for position pos of connection
// c, or ErrNotFound when there is none (never issued, to someone else,
// dropped, or the connection expired: idle since before idleBefore).
func (db *DB) LoadSlidingPos(ctx context.Context, c SlidingConn, pos, idleBefore int64) ([]byte, error) {
	var state string
	err := db.read.QueryRowContext(ctx, `SELECT p.state FROM sliding_sync_positions p
		JOIN sliding_sync_connections c ON c.conn_key = p.conn_key
		WHERE p.pos_id = $1 AND c.user_id = $2 AND c.device_id = $3 AND c.conn_id = $4 AND c.last_used_ts >= $5`,
		pos, c.UserID, c.DeviceID, c.ConnID, idleBefore).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("loading sliding sync position: %w", err)
	}
	return []byte(state), nil
}

// SaveSlidingPos stores a new position of connection c and returns its
// ID. prev is the position the request continued from (0 for a new
// connection, which replaces any earlier one of the same conn_id): the
// client has processed it, so older positions are dropped, and only the
// newest few are kept. ErrNotFound if prev is no longer a position of c. Connections idle since before idleBefore are
// deleted, and a device keeps at most a few connections.
func (db *DB) SaveSlidingPos(ctx context.Context, c SlidingConn, prev int64, state []byte, now, idleBefore int64) (int64, error) {
	var id int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		var key int64
		err := tx.QueryRowContext(ctx, `SELECT conn_key FROM sliding_sync_connections
			WHERE user_id = $1 AND device_id = $2 AND conn_id = $3`, c.UserID, c.DeviceID, c.ConnID).Scan(&key)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if found && prev == 0 {
			if err := deleteSlidingConn(ctx, tx, key); err != nil {
				return err
			}
			found = false
		}
		if !found {
			if prev != 0 {
				return ErrNotFound // expired or replaced meanwhile
			}
			if err := expireSlidingConns(ctx, tx, c, idleBefore); err != nil {
				return err
			}
			if err := tx.QueryRowContext(ctx, `INSERT INTO sliding_sync_connections (user_id, device_id, conn_id, last_used_ts)
				VALUES ($1, $2, $3, $4) RETURNING conn_key`, c.UserID, c.DeviceID, c.ConnID, now).Scan(&key); err != nil {
				return err
			}
		} else {
			// prev must still be a position of this connection (not of one
			// a fresh start replaced, nor dropped meanwhile).
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM sliding_sync_positions WHERE pos_id = $1 AND conn_key = $2`, prev, key).Scan(&one)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrNotFound
			}
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE sliding_sync_connections SET last_used_ts = $1 WHERE conn_key = $2`, now, key); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM sliding_sync_positions WHERE conn_key = $1 AND pos_id < $2`, key, prev); err != nil {
				return err
			}
		}
		if err := tx.QueryRowContext(ctx, `INSERT INTO sliding_sync_positions (conn_key, created_ts, state)
			VALUES ($1, $2, $3) RETURNING pos_id`, key, now, string(state)).Scan(&id); err != nil {
			return err
		}
		// The newest few stay, and prev: a client may cancel and resend
		// from it any number of times.
		_, err = tx.ExecContext(ctx, `DELETE FROM sliding_sync_positions WHERE conn_key = $1 AND pos_id <> $3 AND pos_id NOT IN
			(SELECT pos_id FROM sliding_sync_positions WHERE conn_key = $1 ORDER BY pos_id DESC LIMIT $2)`, key, slidingKeepPositions, prev)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return 0, err
		}
		return 0, fmt.Errorf("saving sliding sync position: %w", err)
	}
	return id, nil
}

func deleteSlidingConn(ctx context.Context, tx *sql.Tx, key int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM sliding_sync_positions WHERE conn_key = $1`, key); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `DELETE FROM sliding_sync_connections WHERE conn_key = $1`, key)
	return err
}

// expireSlidingConns deletes idle connections (a few per call, so one
// request never does much of this work) and the oldest connections of c's
// device beyond the per-device bound, making room for one more.
func expireSlidingConns(ctx context.Context, tx *sql.Tx, c SlidingConn, idleBefore int64) error {
	keys, err := queryColumn[int64](ctx, tx, "listing idle sliding sync connections",
		`SELECT conn_key FROM sliding_sync_connections WHERE last_used_ts < $1 LIMIT 50`, idleBefore)
	if err != nil {
		return err
	}
	device, err := queryColumn[int64](ctx, tx, "listing a device's sliding sync connections",
		`SELECT conn_key FROM sliding_sync_connections WHERE user_id = $1 AND device_id = $2
		ORDER BY last_used_ts DESC, conn_key DESC`, c.UserID, c.DeviceID)
	if err != nil {
		return err
	}
	if len(device) >= slidingMaxConnsPerDevice {
		keys = append(keys, device[slidingMaxConnsPerDevice-1:]...)
	}
	for _, k := range keys {
		if err := deleteSlidingConn(ctx, tx, k); err != nil {
			return err
		}
	}
	return nil
}

// BumpTypes are the event types that move a room up a sliding sync list
// (MSC4186 bump_stamp).
var BumpTypes = []string{"m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
	"m.poll.start", "org.matrix.msc3381.poll.start", "m.beacon_info", "org.matrix.msc3672.beacon_info"}

// LatestBumpPos is the stream position of the room's newest timeline event
// of one of BumpTypes at or before upTo, or 0 if there is none.
func LatestBumpPos(ctx context.Context, q Reader, roomID string, upTo int64) (int64, error) {
	args := []any{roomID, upTo}
	for _, t := range BumpTypes {
		args = append(args, t)
	}
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT stream_pos FROM events WHERE room_id = $1 AND stream_pos <= $2
		AND NOT outlier AND NOT rejected AND NOT soft_failed AND type IN (`+placeholders(3, len(BumpTypes))+`)
		ORDER BY stream_pos DESC LIMIT 1`, args...).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("latest bump event: %w", err)
	}
	return pos, nil
}
