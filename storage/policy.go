package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// CurrentStateEventID returns the event ID of one state key of a room's
// current state, or "" when the room has none.
func CurrentStateEventID(ctx context.Context, q Reader, roomID, eventType, stateKey string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT event_id FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`,
		roomID, eventType, stateKey).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// CurrentStateEventIDs returns the event IDs of the given keys of a room's
// current state (absent keys are left out), in one query.
func CurrentStateEventIDs(ctx context.Context, q Reader, roomID string, keys ...StateKey) (map[StateKey]string, error) {
	out := map[StateKey]string{}
	if len(keys) == 0 {
		return out, nil
	}
	args := []any{roomID}
	var conds []string
	for _, k := range keys {
		conds = append(conds, fmt.Sprintf("(type = $%d AND state_key = $%d)", len(args)+1, len(args)+2))
		args = append(args, k.Type, k.StateKey)
	}
	err := queryEach(ctx, q, "loading current state entries", `SELECT type, state_key, event_id FROM current_state WHERE room_id = $1 AND (`+
		strings.Join(conds, " OR ")+`)`, args, func(rows *sql.Rows) error {
		var k StateKey
		var id string
		if err := rows.Scan(&k.Type, &k.StateKey, &id); err != nil {
			return err
		}
		out[k] = id
		return nil
	})
	return out, err
}
