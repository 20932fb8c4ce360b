package storage

import (
	"context"
	"database/sql"
	"errors"
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
// current state (absent keys are left out): one indexed lookup per key,
// which an OR of the keys in one query is not always planned as.
func CurrentStateEventIDs(ctx context.Context, q Reader, roomID string, keys ...StateKey) (map[StateKey]string, error) {
	out := map[StateKey]string{}
	for _, k := range keys {
		id, err := CurrentStateEventID(ctx, q, roomID, k.Type, k.StateKey)
		if err != nil {
			return nil, err
		}
		if id != "" {
			out[k] = id
		}
	}
	return out, nil
}

// RoomStateOfType returns the state keys and event IDs of one event
// type in a room's current state (a range of the primary key, where
// loading the whole state reads every entry).
func RoomStateOfType(ctx context.Context, q Reader, roomID, eventType string) (map[string]string, error) {
	return queryMap[string, string](ctx, q, "reading "+eventType+" state",
		`SELECT state_key, event_id FROM current_state WHERE room_id = $1 AND type = $2`, roomID, eventType)
}
