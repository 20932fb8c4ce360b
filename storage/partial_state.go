package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// PartialStateRoom is a room joined with partial state (MSC3902).
type PartialStateRoom struct {
	RoomID, JoinEventID string
	// Servers to resync from: the resident server first.
	Servers []string
	// CompletedPos is nil while the state is partial.
	CompletedPos *int64
}

// PutPartialStateRoom records a partial-state join (with the join, in
// its transaction); a new partial join of the room starts afresh.
func PutPartialStateRoom(ctx context.Context, tx *sql.Tx, roomID, joinEventID string, servers []string, ts int64) error {
	b, _ := json.Marshal(servers)
	_, err := tx.ExecContext(ctx, `INSERT INTO partial_state_rooms (room_id, join_event_id, servers, created_ts, completed_pos)
		VALUES ($1, $2, $3, $4, NULL)
		ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, servers = excluded.servers,
			created_ts = excluded.created_ts, completed_pos = NULL`, roomID, joinEventID, string(b), ts)
	if err != nil {
		return fmt.Errorf("recording a partial-state join: %w", err)
	}
	return nil
}

func scanPartialStateRoom(rows *sql.Rows, p *PartialStateRoom) error {
	var servers string
	if err := rows.Scan(&p.RoomID, &p.JoinEventID, &servers, &p.CompletedPos); err != nil {
		return err
	}
	return json.Unmarshal([]byte(servers), &p.Servers)
}

// GetPartialStateRoom returns a room's partial-state record, or
// ErrNotFound for a room never joined with partial state.
func GetPartialStateRoom(ctx context.Context, q Reader, roomID string) (PartialStateRoom, error) {
	ps, err := queryList(ctx, q, "reading a partial-state room", `SELECT room_id, join_event_id, servers, completed_pos
		FROM partial_state_rooms WHERE room_id = $1`, scanPartialStateRoom, roomID)
	if err != nil {
		return PartialStateRoom{}, err
	}
	if len(ps) == 0 {
		return PartialStateRoom{}, ErrNotFound
	}
	return ps[0], nil
}

// IsPartialState reports whether a room's state is partial now.
func IsPartialState(ctx context.Context, q Reader, roomID string) (bool, error) {
	p, err := GetPartialStateRoom(ctx, q, roomID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil && p.CompletedPos == nil, err
}

// PendingPartialStateRooms lists the rooms whose resync is not done.
func PendingPartialStateRooms(ctx context.Context, q Reader) ([]PartialStateRoom, error) {
	return queryList(ctx, q, "listing partial-state rooms", `SELECT room_id, join_event_id, servers, completed_pos
		FROM partial_state_rooms WHERE completed_pos IS NULL`, scanPartialStateRoom)
}

// PartialStateSince maps the rooms that are partial now (to nil) or whose
// state became complete after stream position since (to that position).
func PartialStateSince(ctx context.Context, q Reader, since int64) (map[string]*int64, error) {
	ps, err := queryList(ctx, q, "listing partial-state rooms", `SELECT room_id, join_event_id, servers, completed_pos
		FROM partial_state_rooms WHERE completed_pos IS NULL OR completed_pos > $1`, scanPartialStateRoom, since)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*int64, len(ps))
	for _, p := range ps {
		out[p.RoomID] = p.CompletedPos
	}
	return out, nil
}

// RoomsOfUserWithPartialState is RoomsOfUser and, for those rooms only,
// PartialStateSince, in one query (every sync needs both).
func RoomsOfUserWithPartialState(ctx context.Context, q Reader, userID string, since int64, memberships ...string) ([]Membership, map[string]*int64, error) {
	args := []any{userID, since}
	for _, m := range memberships {
		args = append(args, m)
	}
	var out []Membership
	partial := map[string]*int64{}
	err := queryEach(ctx, q, "listing rooms of user", `SELECT cs.room_id, cs.membership, cs.event_id,
			CASE WHEN p.room_id IS NULL THEN 0 ELSE 1 END, p.completed_pos
		FROM current_state cs LEFT JOIN partial_state_rooms p ON p.room_id = cs.room_id AND (p.completed_pos IS NULL OR p.completed_pos > $2)
		WHERE cs.type = 'm.room.member' AND cs.state_key = $1 AND cs.membership IN (`+placeholders(3, len(memberships))+`)`, args, func(rows *sql.Rows) error {
		m := Membership{UserID: userID}
		var isPartial int
		var completed sql.NullInt64
		if err := rows.Scan(&m.RoomID, &m.Membership, &m.EventID, &isPartial, &completed); err != nil {
			return err
		}
		out = append(out, m)
		if isPartial == 1 {
			var pos *int64
			if completed.Valid {
				pos = &completed.Int64
			}
			partial[m.RoomID] = pos
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return out, partial, nil
}

// CompletePartialStateRoom marks a room's state complete at pos.
func CompletePartialStateRoom(ctx context.Context, tx *sql.Tx, roomID string, pos int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE partial_state_rooms SET completed_pos = $1 WHERE room_id = $2`, pos, roomID)
	return err
}

// RoomEventsFrom returns a room's events in the DAG (no outliers) from
// stream position pos on, in stream order.
func RoomEventsFrom(ctx context.Context, q Reader, roomID string, pos int64) ([]Event, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos >= $2 AND NOT outlier ORDER BY stream_pos`, roomID, pos)
}

// SetEventState replaces an event's state snapshots and rejection once
// its room's full state is known.
func SetEventState(ctx context.Context, tx *sql.Tx, eventID string, before, after int64, rejected bool) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET snapshot_before = $1, snapshot_after = $2, rejected = $3 WHERE event_id = $4`,
		before, after, rejected, eventID)
	return err
}

// TakeStreamPos takes a new event stream position without an event: a
// placeholder row is inserted and deleted in the transaction (positions
// are never reused: AUTOINCREMENT, BIGSERIAL), so no reader sees it. The
// position marks a change of a room that is no event (a partial-state
// room made complete) and orders it among events. Call it with the event
// stream locked.
func TakeStreamPos(ctx context.Context, tx *sql.Tx, roomID string) (int64, error) {
	id := fmt.Sprintf("$stream-position-%d", time.Now().UnixNano())
	pos, err := InsertEvent(ctx, tx, Event{EventID: id, RoomID: roomID, Type: "org.hearth.stream_position", Sender: "", Outlier: true, JSON: []byte("{}")})
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE event_id = $1`, id); err != nil {
		return 0, err
	}
	return pos, nil
}
