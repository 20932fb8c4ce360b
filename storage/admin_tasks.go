package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Admin tasks (migration 0027): durable background work of the admin API.

// AdminTask is one row of admin_tasks. Params and Result are JSON.
type AdminTask struct {
	ID         string
	Action     string
	ResourceID string
	Params     string
	Status     string
	Result     string
	Error      *string
	CreatedTS  int64
	UpdatedTS  int64
}

const adminTaskColumns = `task_id, action, resource_id, params, status, result, error, created_ts, updated_ts`

func scanAdminTask(rows *sql.Rows, t *AdminTask) error {
	var e sql.NullString
	if err := rows.Scan(&t.ID, &t.Action, &t.ResourceID, &t.Params, &t.Status, &t.Result, &e, &t.CreatedTS, &t.UpdatedTS); err != nil {
		return err
	}
	t.Error = ptrString(e)
	return nil
}

// InsertAdminTask records a new task.
func (db *DB) InsertAdminTask(ctx context.Context, t AdminTask) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO admin_tasks (`+adminTaskColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			t.ID, t.Action, t.ResourceID, t.Params, t.Status, t.Result, t.Error, t.CreatedTS, t.UpdatedTS)
		if err != nil {
			return fmt.Errorf("recording admin task: %w", err)
		}
		return nil
	})
}

// UpdateAdminTask saves a task's status, result and error.
func (db *DB) UpdateAdminTask(ctx context.Context, t AdminTask) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE admin_tasks SET status = $1, result = $2, error = $3, updated_ts = $4 WHERE task_id = $5`,
			t.Status, t.Result, t.Error, nowMillis(), t.ID)
		if err != nil {
			return fmt.Errorf("updating admin task: %w", err)
		}
		return nil
	})
}

// AdminTaskByID returns one task, or ErrNotFound.
func (db *DB) AdminTaskByID(ctx context.Context, id string) (AdminTask, error) {
	l, err := queryList(ctx, db.Read(), "reading admin task", `SELECT `+adminTaskColumns+` FROM admin_tasks WHERE task_id = $1`, scanAdminTask, id)
	if err != nil {
		return AdminTask{}, err
	}
	if len(l) == 0 {
		return AdminTask{}, ErrNotFound
	}
	return l[0], nil
}

// AdminTasks lists tasks, oldest first; unfinished only when unfinished.
func (db *DB) AdminTasks(ctx context.Context, unfinished bool) ([]AdminTask, error) {
	q := `SELECT ` + adminTaskColumns + ` FROM admin_tasks`
	if unfinished {
		q += ` WHERE status IN ('scheduled', 'active')`
	}
	return queryList(ctx, db.Read(), "listing admin tasks", q+` ORDER BY created_ts, task_id`, scanAdminTask)
}

// AllRoomDeletions lists every room deletion, oldest first.
func (db *DB) AllRoomDeletions(ctx context.Context) ([]RoomDeletion, error) {
	return db.roomDeletions(ctx, `TRUE`)
}

// EventsToRedact lists up to limit events of sender in roomID not yet
// redacted: messages, encrypted events and joins (Synapse's choice), in
// [afterTS, beforeTS) when those are not 0, newest first.
func (db *DB) EventsToRedact(ctx context.Context, roomID, sender string, limit int, beforeTS, afterTS int64) ([]string, error) {
	return queryColumn[string](ctx, db.Read(), "listing events to redact", `SELECT event_id FROM events
		WHERE room_id = $1 AND sender = $2 AND NOT rejected AND NOT outlier AND redacted_by IS NULL
		AND (type IN ('m.room.message', 'm.room.encrypted') OR (type = 'm.room.member' AND membership = 'join'))
		AND ($3 = 0 OR origin_server_ts < $3) AND origin_server_ts >= $4
		ORDER BY stream_pos DESC LIMIT $5`, roomID, sender, beforeTS, afterTS, limit)
}

// PurgeableEvents lists up to limit timeline events of roomID before the
// point (depth, pos): not state, not forward extremities (keep), and not
// sent from serverName unless withLocal.
func (db *DB) PurgeableEvents(ctx context.Context, roomID string, depth, pos int64, keep []string, serverName string, withLocal bool, limit int) ([]string, error) {
	ids, err := queryColumn[string](ctx, db.Read(), "listing events to purge", `SELECT event_id FROM events
		WHERE room_id = $1 AND state_key IS NULL AND (depth < $2 OR (depth = $2 AND stream_pos < $3))
		AND ($4 OR sender NOT LIKE $5) ORDER BY depth, stream_pos LIMIT $6`,
		roomID, depth, pos, withLocal, "%:"+serverName, limit+len(keep))
	if err != nil {
		return nil, err
	}
	skip := map[string]bool{}
	for _, k := range keep {
		skip[k] = true
	}
	out := ids[:0]
	for _, id := range ids {
		if !skip[id] && len(out) < limit {
			out = append(out, id)
		}
	}
	return out, nil
}

// PurgeEvents deletes events and what refers to them by ID (search
// index, notifications, queued sends, transaction IDs) in one
// transaction.
func (db *DB) PurgeEvents(ctx context.Context, ids []string) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		if len(ids) > 0 {
			if err := bumpPushDeletions(ctx, tx); err != nil {
				return err
			}
		}
		for _, id := range ids {
			if err := db.UnindexForSearch(ctx, tx, id); err != nil {
				return err
			}
			for _, q := range []string{
				`DELETE FROM notifications WHERE event_id = $1`,
				`DELETE FROM push_actions WHERE room_id = (SELECT room_id FROM events WHERE event_id = $1) AND event_id = $1`,
				`DELETE FROM federation_queue_pdus WHERE event_id = $1`,
				`DELETE FROM client_txns WHERE event_id = $1`,
				`DELETE FROM events WHERE event_id = $1`,
			} {
				if _, err := tx.ExecContext(ctx, q, id); err != nil {
					return fmt.Errorf("purging event: %w", err)
				}
			}
		}
		return nil
	})
}
