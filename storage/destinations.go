package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Federation destinations' retry state (migration 0027), kept by the
// federation sender and read by the admin API.

// DestinationRetry is the retry state of a destination that is failing.
type DestinationRetry struct {
	Destination   string
	FailureTS     int64 // when this run of failures began
	RetryLastTS   int64
	RetryInterval int64 // milliseconds
}

// RecordDestinationFailure notes a failed send to dest at now and the
// wait before the next try.
func (db *DB) RecordDestinationFailure(ctx context.Context, dest string, now, intervalMS int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federation_destinations (destination, failure_ts, retry_last_ts, retry_interval)
			VALUES ($1, $2, $2, $3) ON CONFLICT (destination) DO UPDATE SET retry_last_ts = $2, retry_interval = $3`, dest, now, intervalMS)
		if err != nil {
			return fmt.Errorf("recording destination failure: %w", err)
		}
		return nil
	})
}

// ClearDestinationFailure forgets dest's failures (a send succeeded, or an
// admin reset the connection).
func (db *DB) ClearDestinationFailure(ctx context.Context, dest string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM federation_destinations WHERE destination = $1`, dest); err != nil {
			return fmt.Errorf("clearing destination failure: %w", err)
		}
		return nil
	})
}

// DestinationRetries maps every failing destination to its retry state.
func (db *DB) DestinationRetries(ctx context.Context) (map[string]DestinationRetry, error) {
	l, err := queryList(ctx, db.Read(), "listing destination failures", `SELECT destination, failure_ts, retry_last_ts, retry_interval
		FROM federation_destinations`, func(rows *sql.Rows, d *DestinationRetry) error {
		return rows.Scan(&d.Destination, &d.FailureTS, &d.RetryLastTS, &d.RetryInterval)
	})
	out := map[string]DestinationRetry{}
	for _, d := range l {
		out[d.Destination] = d
	}
	return out, err
}

// DestinationRetryOf returns dest's retry state, or ErrNotFound when it is
// not failing.
func (db *DB) DestinationRetryOf(ctx context.Context, dest string) (DestinationRetry, error) {
	d := DestinationRetry{Destination: dest}
	err := db.Read().QueryRowContext(ctx, `SELECT failure_ts, retry_last_ts, retry_interval FROM federation_destinations
		WHERE destination = $1`, dest).Scan(&d.FailureTS, &d.RetryLastTS, &d.RetryInterval)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("reading destination failure: %w", err)
	}
	return d, nil
}

// JoinedMembers maps every room to its joined members (current state).
func (db *DB) JoinedMembers(ctx context.Context) ([][2]string, error) {
	return queryList(ctx, db.Read(), "listing joined members", `SELECT room_id, state_key FROM current_state
		WHERE type = 'm.room.member' AND membership = 'join' ORDER BY room_id`, func(rows *sql.Rows, p *[2]string) error {
		return rows.Scan(&p[0], &p[1])
	})
}
