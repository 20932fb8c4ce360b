package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Thread subscriptions (MSC4306) and their stream (MSC4308). See migration
// 0023: one row per (user, room, thread), moved to a new stream position on
// every change, kept with subscribed false after an unsubscription. Writers
// are serialized on PostgreSQL (as for account data) so positions commit in
// order and a reader never skips one still in flight.

// ErrConflictingUnsubscription: an automatic subscription whose cause event
// came before the user's latest unsubscription from the thread.
var ErrConflictingUnsubscription = errors.New("thread unsubscribed after the cause event")

// ThreadSubscription is one row of the stream.
type ThreadSubscription struct {
	StreamPos  int64
	RoomID     string
	ThreadID   string
	Subscribed bool
	Automatic  bool
}

const threadSubsLockKey = 7460120

func (db *DB) lockThreadSubs(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", threadSubsLockKey); err != nil {
		return fmt.Errorf("thread subscriptions lock: %w", err)
	}
	return nil
}

type threadSubRow struct {
	ThreadSubscription
	unsubscribedAt int64
}

func getThreadSub(ctx context.Context, q Reader, userID, roomID, threadID string) (threadSubRow, error) {
	r := threadSubRow{ThreadSubscription: ThreadSubscription{RoomID: roomID, ThreadID: threadID}}
	err := q.QueryRowContext(ctx, `SELECT stream_pos, subscribed, automatic, unsubscribed_at FROM thread_subscriptions
		WHERE user_id = $1 AND room_id = $2 AND thread_id = $3`, userID, roomID, threadID).
		Scan(&r.StreamPos, &r.Subscribed, &r.Automatic, &r.unsubscribedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("loading thread subscription: %w", err)
	}
	return r, nil
}

// GetThreadSubscription is the user's subscription to a thread;
// ErrNotFound when not subscribed.
func (db *DB) GetThreadSubscription(ctx context.Context, userID, roomID, threadID string) (ThreadSubscription, error) {
	r, err := getThreadSub(ctx, db.read, userID, roomID, threadID)
	if err == nil && !r.Subscribed {
		err = ErrNotFound
	}
	return r.ThreadSubscription, err
}

// putThreadSub replaces the row, moving it to a new stream position.
func putThreadSub(ctx context.Context, tx *sql.Tx, userID string, r threadSubRow) (int64, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM thread_subscriptions WHERE user_id = $1 AND room_id = $2 AND thread_id = $3`,
		userID, r.RoomID, r.ThreadID); err != nil {
		return 0, fmt.Errorf("replacing thread subscription: %w", err)
	}
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO thread_subscriptions (user_id, room_id, thread_id, subscribed, automatic, unsubscribed_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING stream_pos`,
		userID, r.RoomID, r.ThreadID, r.Subscribed, r.Automatic, r.unsubscribedAt).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storing thread subscription: %w", err)
	}
	return pos, nil
}

// SubscribeThread subscribes the user to a thread and returns the new
// stream position (0: nothing changed). A manual subscription replaces an
// automatic one; an automatic one leaves any subscription as it is, and is
// refused with ErrConflictingUnsubscription when causePos (the events
// stream position of the cause event) is at or before the latest
// unsubscription.
func (db *DB) SubscribeThread(ctx context.Context, userID, roomID, threadID string, automatic bool, causePos int64) (int64, error) {
	var pos int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := db.lockThreadSubs(ctx, tx); err != nil {
			return err
		}
		old, err := getThreadSub(ctx, tx, userID, roomID, threadID)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		found := err == nil
		if automatic {
			if found && old.Subscribed {
				return nil
			}
			if found && causePos <= old.unsubscribedAt {
				return ErrConflictingUnsubscription
			}
		} else if found && old.Subscribed && !old.Automatic {
			return nil
		}
		old.Subscribed, old.Automatic = true, automatic
		pos, err = putThreadSub(ctx, tx, userID, old)
		return err
	})
	return pos, err
}

// UnsubscribeThread removes the user's subscription, remembering eventsPos
// (the events stream position now) against later automatic subscriptions.
// It returns the new stream position (0: there was no subscription).
func (db *DB) UnsubscribeThread(ctx context.Context, userID, roomID, threadID string, eventsPos int64) (int64, error) {
	var pos int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := db.lockThreadSubs(ctx, tx); err != nil {
			return err
		}
		old, err := getThreadSub(ctx, tx, userID, roomID, threadID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		old.unsubscribedAt = max(old.unsubscribedAt, eventsPos)
		if !old.Subscribed {
			_, err := tx.ExecContext(ctx, `UPDATE thread_subscriptions SET unsubscribed_at = $1
				WHERE user_id = $2 AND room_id = $3 AND thread_id = $4`, old.unsubscribedAt, userID, roomID, threadID)
			return err
		}
		old.Subscribed, old.Automatic = false, false
		pos, err = putThreadSub(ctx, tx, userID, old)
		return err
	})
	return pos, err
}

// ThreadSubscriptionChanges returns the user's latest changes with stream
// positions in (after, before), newest first, at most limit of them (one
// more tells the caller there are more). With onlySubscribed (an initial
// view, with nothing to unsubscribe) unsubscriptions are left out.
func (db *DB) ThreadSubscriptionChanges(ctx context.Context, userID string, after, before int64, limit int, onlySubscribed bool) ([]ThreadSubscription, error) {
	q := `SELECT stream_pos, room_id, thread_id, subscribed, automatic FROM thread_subscriptions
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos < $3`
	if onlySubscribed {
		q += ` AND subscribed`
	}
	q += ` ORDER BY stream_pos DESC LIMIT $4`
	var out []ThreadSubscription
	err := queryEach(ctx, db.read, "reading thread subscriptions", q, []any{userID, after, before, limit}, func(rows *sql.Rows) error {
		var s ThreadSubscription
		if err := rows.Scan(&s.StreamPos, &s.RoomID, &s.ThreadID, &s.Subscribed, &s.Automatic); err != nil {
			return err
		}
		out = append(out, s)
		return nil
	})
	return out, err
}

// MaxThreadSubscriptionPos is the latest position of the stream (0 when
// empty).
func (db *DB) MaxThreadSubscriptionPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM thread_subscriptions`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("reading thread subscription position: %w", err)
	}
	return pos, nil
}
