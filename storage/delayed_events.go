package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Delayed events (MSC4140): events a user asked to have sent later. The
// rtc package schedules and sends them; these are its queries.

// Delayed event statuses. Scheduled and sending are pending; the others
// are final.
const (
	DelayedScheduled = "scheduled"
	DelayedSending   = "sending"
	DelayedSent      = "sent"
	DelayedCancelled = "cancelled"
	DelayedFailed    = "failed"
)

// DelayedEvent is a row of delayed_events.
type DelayedEvent struct {
	DelayID     string
	UserID      string
	DeviceID    string
	Txn         *string
	RoomID      string
	Type        string
	StateKey    *string
	Content     string
	DelayMS     int64
	ScheduledAt int64
	SendTS      int64
	Status      string
	EventID     *string
	Error       *string // a Matrix error body
	FinalisedTS *int64
}

const delayedColumns = `delay_id, user_id, device_id, txn, room_id, event_type, state_key, content, delay_ms,
	scheduled_at, send_ts, status, event_id, error, finalised_ts`

func scanDelayed(sc interface{ Scan(...any) error }) (DelayedEvent, error) {
	var d DelayedEvent
	err := sc.Scan(&d.DelayID, &d.UserID, &d.DeviceID, &d.Txn, &d.RoomID, &d.Type, &d.StateKey, &d.Content, &d.DelayMS,
		&d.ScheduledAt, &d.SendTS, &d.Status, &d.EventID, &d.Error, &d.FinalisedTS)
	return d, err
}

// InsertDelayedEvent stores a scheduled delayed event. A transaction
// already used by the same device returns ErrConflict.
func (db *DB) InsertDelayedEvent(ctx context.Context, d DelayedEvent) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO delayed_events (`+delayedColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, NULL, NULL, NULL)`,
			d.DelayID, d.UserID, d.DeviceID, d.Txn, d.RoomID, d.Type, d.StateKey, d.Content, d.DelayMS,
			d.ScheduledAt, d.SendTS, DelayedScheduled)
		if isUniqueViolation(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("inserting delayed event: %w", err)
		}
		return nil
	})
}

// DelayedEventByTxn is the delayed event a device's transaction scheduled.
func (db *DB) DelayedEventByTxn(ctx context.Context, userID, deviceID, txn string) (DelayedEvent, error) {
	return scanOneDelayed(db.read.QueryRowContext(ctx, `SELECT `+delayedColumns+` FROM delayed_events
		WHERE user_id = $1 AND device_id = $2 AND txn = $3`, userID, deviceID, txn))
}

// GetDelayedEvent is one delayed event, pending or finalised.
func (db *DB) GetDelayedEvent(ctx context.Context, delayID string) (DelayedEvent, error) {
	return scanOneDelayed(db.read.QueryRowContext(ctx, `SELECT `+delayedColumns+` FROM delayed_events WHERE delay_id = $1`, delayID))
}

func scanOneDelayed(row *sql.Row) (DelayedEvent, error) {
	d, err := scanDelayed(row)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("reading delayed event: %w", err)
	}
	return d, nil
}

// UserDelayedEvents lists a user's delayed events: the pending ones in
// order of their send time, or (finalised) the finalised ones, latest
// first.
func (db *DB) UserDelayedEvents(ctx context.Context, userID string, finalised bool) ([]DelayedEvent, error) {
	q := `SELECT ` + delayedColumns + ` FROM delayed_events WHERE user_id = $1 AND status IN ($2, $3) ORDER BY send_ts, delay_id`
	args := []any{userID, DelayedScheduled, DelayedSending}
	if finalised {
		q = `SELECT ` + delayedColumns + ` FROM delayed_events WHERE user_id = $1 AND status IN ($2, $3, $4)
			ORDER BY finalised_ts DESC, delay_id LIMIT 1000`
		args = []any{userID, DelayedSent, DelayedCancelled, DelayedFailed}
	}
	return orEmpty(queryList(ctx, db.read, "listing delayed events", q, func(rows *sql.Rows, d *DelayedEvent) (err error) {
		*d, err = scanDelayed(rows)
		return err
	}, args...))
}

// DueDelayedEvents are the IDs of scheduled delayed events whose send
// time is at or before now, earliest first, at most limit.
func (db *DB) DueDelayedEvents(ctx context.Context, now int64, limit int) ([]string, error) {
	return queryColumn[string](ctx, db.read, "listing due delayed events", `SELECT delay_id FROM delayed_events
		WHERE status = $1 AND send_ts <= $2 ORDER BY send_ts, delay_id LIMIT $3`, DelayedScheduled, now, limit)
}

// NextDelayedSend is the earliest send time of a scheduled delayed event;
// false when none is scheduled.
func (db *DB) NextDelayedSend(ctx context.Context) (int64, bool, error) {
	var ts sql.NullInt64
	if err := db.read.QueryRowContext(ctx, `SELECT MIN(send_ts) FROM delayed_events WHERE status = $1`, DelayedScheduled).Scan(&ts); err != nil {
		return 0, false, fmt.Errorf("reading next delayed send: %w", err)
	}
	return ts.Int64, ts.Valid, nil
}

// ClaimDelayedEvent moves a scheduled delayed event to sending; it reports
// whether this caller got it (no one else did, and, when dueBy is not 0,
// its send time is at or before dueBy: a restart may have pushed it back).
func (db *DB) ClaimDelayedEvent(ctx context.Context, delayID string, now, dueBy int64) (bool, error) {
	q := `UPDATE delayed_events SET status = $1, claimed_ts = $2 WHERE delay_id = $3 AND status = $4`
	args := []any{DelayedSending, now, delayID, DelayedScheduled}
	if dueBy != 0 {
		q += ` AND send_ts <= $5`
		args = append(args, dueBy)
	}
	return db.updateOne(ctx, q, args...)
}

// StaleDelayedClaims are the delayed events claimed for sending at or
// before claimedBy and never finalised: the process sending them stopped.
func (db *DB) StaleDelayedClaims(ctx context.Context, claimedBy int64) ([]string, error) {
	return queryColumn[string](ctx, db.read, "listing stale delayed claims", `SELECT delay_id FROM delayed_events
		WHERE status = $1 AND claimed_ts <= $2 ORDER BY send_ts, delay_id`, DelayedSending, claimedBy)
}

// RetakeDelayedClaim renews a stale claim (see StaleDelayedClaims); it
// reports whether this caller got it.
func (db *DB) RetakeDelayedClaim(ctx context.Context, delayID string, claimedBy, now int64) (bool, error) {
	return db.updateOne(ctx, `UPDATE delayed_events SET claimed_ts = $1 WHERE delay_id = $2 AND status = $3 AND claimed_ts <= $4`,
		now, delayID, DelayedSending, claimedBy)
}

// UnclaimDelayedEvent puts a claimed delayed event back on schedule (a
// send action that failed: the event stays scheduled, as MSC4140 asks).
func (db *DB) UnclaimDelayedEvent(ctx context.Context, delayID string) error {
	_, err := db.updateOne(ctx, `UPDATE delayed_events SET status = $1, claimed_ts = NULL WHERE delay_id = $2 AND status = $3`,
		DelayedScheduled, delayID, DelayedSending)
	return err
}

// FinishDelayedEvent finalises a claimed delayed event: sent as eventID,
// or failed with errBody (a Matrix error body).
func (db *DB) FinishDelayedEvent(ctx context.Context, delayID, eventID, errBody string, now int64) error {
	status, ev, e := DelayedSent, &eventID, (*string)(nil)
	if eventID == "" {
		status, ev, e = DelayedFailed, nil, &errBody
	}
	_, err := db.updateOne(ctx, `UPDATE delayed_events SET status = $1, event_id = $2, error = $3, finalised_ts = $4
		WHERE delay_id = $5 AND status = $6`, status, ev, e, now, delayID, DelayedSending)
	return err
}

// MarkDelayedEventSent finalises a claimed delayed event as sent inside
// the transaction that persists its event, so the event and the row's
// status commit together (a sync never shows the event while the row
// still says sending).
func MarkDelayedEventSent(ctx context.Context, tx *sql.Tx, delayID, eventID string, now int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE delayed_events SET status = $1, event_id = $2, error = NULL, finalised_ts = $3
		WHERE delay_id = $4 AND status = $5`, DelayedSent, eventID, now, delayID, DelayedSending); err != nil {
		return fmt.Errorf("finalising delayed event: %w", err)
	}
	return nil
}

// CancelDelayedEvent cancels a scheduled delayed event; it reports whether
// it was scheduled.
func (db *DB) CancelDelayedEvent(ctx context.Context, delayID string, now int64) (bool, error) {
	return db.updateOne(ctx, `UPDATE delayed_events SET status = $1, finalised_ts = $2 WHERE delay_id = $3 AND status = $4`,
		DelayedCancelled, now, delayID, DelayedScheduled)
}

// RestartDelayedEvent sets a scheduled delayed event's timer going again
// from now; it reports whether it was scheduled.
func (db *DB) RestartDelayedEvent(ctx context.Context, delayID string, now int64) (bool, error) {
	return db.updateOne(ctx, `UPDATE delayed_events SET scheduled_at = $1, send_ts = $1 + delay_ms WHERE delay_id = $2 AND status = $3`,
		now, delayID, DelayedScheduled)
}

// CancelDelayedStateOfOthers cancels, with errBody as the error, the
// scheduled delayed state events for (roomID, evType, stateKey) of users
// other than sender: a newer state event by someone else replaced that
// state. It returns how many it cancelled.
func (db *DB) CancelDelayedStateOfOthers(ctx context.Context, roomID, evType, stateKey, sender, errBody string, now int64) (int64, error) {
	// Most state changes have no delayed event waiting: look before writing.
	var one int
	err := db.read.QueryRowContext(ctx, `SELECT 1 FROM delayed_events
		WHERE room_id = $1 AND event_type = $2 AND state_key = $3 AND status = $4 AND user_id <> $5 LIMIT 1`,
		roomID, evType, stateKey, DelayedScheduled, sender).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("looking for delayed state events: %w", err)
	}
	var n int64
	err = db.WriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE delayed_events SET status = $1, error = $2, finalised_ts = $3
			WHERE room_id = $4 AND event_type = $5 AND state_key = $6 AND status = $7 AND user_id <> $8`,
			DelayedCancelled, errBody, now, roomID, evType, stateKey, DelayedScheduled, sender)
		if err != nil {
			return fmt.Errorf("cancelling delayed state events: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n, err
}

// PruneDelayedEvents deletes delayed events finalised before before.
func (db *DB) PruneDelayedEvents(ctx context.Context, before int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM delayed_events WHERE finalised_ts < $1`, before)
		return err
	})
}

// updateOne runs one UPDATE in its own transaction and reports whether it
// changed a row.
func (db *DB) updateOne(ctx context.Context, q string, args ...any) (bool, error) {
	var n int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, q, args...)
		if err != nil {
			return fmt.Errorf("updating delayed event: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return n > 0, err
}
