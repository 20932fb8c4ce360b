package storage

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Several processes sharing one PostgreSQL database coordinate through it
// alone: LISTEN/NOTIFY carries what the others must hear of at once
// (sync wake-ups, cache invalidations, queued work), and a session
// advisory lock elects the one process that runs background senders.
// Both need a connection of their own, outside the pool: a LISTEN and a
// session lock belong to one connection and end with it.

// clusterLockClass is the first key of the leadership advisory lock (the
// second is ClusterKey). Two-key advisory locks are a space apart from the
// one-key transaction locks that order stream positions (7460118...).
const clusterLockClass = 7460130

// ClusterKey names this database and schema, so that servers on other
// schemas of the same PostgreSQL database (tests do that) neither share
// notification channels nor compete for leadership: advisory locks and
// channels are per database, not per schema.
func (db *DB) ClusterKey(ctx context.Context) (int32, error) {
	var key int32
	err := db.read.QueryRowContext(ctx, `SELECT hashtext(current_database() || '/' || current_schema())`).Scan(&key)
	if err != nil {
		return 0, fmt.Errorf("reading the cluster key: %w", err)
	}
	return key, nil
}

// Notify sends payloads on channel, in order, in one statement; listeners
// receive them once it commits.
func (db *DB) Notify(ctx context.Context, channel string, payloads []string) error {
	_, err := db.write.ExecContext(ctx, `SELECT pg_notify($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS t(p, i) ORDER BY i`, channel, payloads)
	if err != nil {
		return fmt.Errorf("sending notifications: %w", err)
	}
	return nil
}

// Listeners counts the sessions listening on channel: one per process
// sharing the database (the listening sessions run nothing else, so their
// last statement is the LISTEN). Sessions of other roles are not visible
// to an unprivileged role and are not counted.
func (db *DB) Listeners(ctx context.Context, channel string) (int, error) {
	var n int
	err := db.read.QueryRowContext(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = $1`,
		"LISTEN "+pgx.Identifier{channel}.Sanitize()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting listeners: %w", err)
	}
	return n, nil
}

// SessionConn is a PostgreSQL connection of its own, for LISTEN or for a
// session advisory lock. It is not safe for concurrent use.
type SessionConn struct{ conn *pgx.Conn }

// ConnectSession opens a session connection (PostgreSQL only).
func (db *DB) ConnectSession(ctx context.Context) (*SessionConn, error) {
	if db.dialect != Postgres {
		return nil, fmt.Errorf("session connections need PostgreSQL")
	}
	conn, err := pgx.Connect(ctx, db.dsn)
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return &SessionConn{conn: conn}, nil
}

// Listen subscribes the connection to channel.
func (c *SessionConn) Listen(ctx context.Context, channel string) error {
	if _, err := c.conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("listening on %s: %w", channel, err)
	}
	return nil
}

// WaitNotification returns the payload of the next notification.
func (c *SessionConn) WaitNotification(ctx context.Context) (string, error) {
	n, err := c.conn.WaitForNotification(ctx)
	if err != nil {
		return "", err
	}
	return n.Payload, nil
}

// TryLeaderLock takes the leadership lock of key if no other session holds
// it; it is held until the connection ends.
func (c *SessionConn) TryLeaderLock(ctx context.Context, key int32) (bool, error) {
	var ok bool
	if err := c.conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1, $2)", int32(clusterLockClass), key).Scan(&ok); err != nil {
		return false, fmt.Errorf("taking the leader lock: %w", err)
	}
	return ok, nil
}

// Ping checks the connection (and so a lock it holds) is alive.
func (c *SessionConn) Ping(ctx context.Context) error { return c.conn.Ping(ctx) }

// Close ends the session, releasing its locks.
func (c *SessionConn) Close() { _ = c.conn.Close(context.Background()) }

// ephemeralLockKey orders the typing and presence positions handed out by
// NotifyOrdered (a one-key transaction lock, see clusterLockClass).
const ephemeralLockKey = 7460123

// NotifyOrdered takes the next typing and presence position and sends
// payload(pos) on channel, in one transaction that holds a lock until it
// commits: notifications are delivered in commit order, so every listener
// (the sender too) receives these in the order of their positions. A
// position is the database's clock in Unix milliseconds, or one more than
// the previous position when that is later.
func (db *DB) NotifyOrdered(ctx context.Context, channel string, payload func(pos int64) string) (int64, error) {
	var pos int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", ephemeralLockKey); err != nil {
			return err
		}
		if err := tx.QueryRowContext(ctx, `SELECT setval('ephemeral_positions',
			GREATEST(nextval('ephemeral_positions'), (extract(epoch FROM clock_timestamp()) * 1000)::bigint))`).Scan(&pos); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, payload(pos))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sending an ordered notification: %w", err)
	}
	return pos, nil
}
