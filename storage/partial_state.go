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
	// DeviceListPos is the device-list stream head when the join was stored.
	DeviceListPos int64
}

// PutPartialStateRoom records a partial-state join (with the join, in
// its transaction); a new partial join of the room starts afresh.
func PutPartialStateRoom(ctx context.Context, tx *sql.Tx, roomID, joinEventID string, servers []string, ts int64) error {
	b, _ := json.Marshal(servers)
	_, err := tx.ExecContext(ctx, `INSERT INTO partial_state_rooms (room_id, join_event_id, servers, created_ts, completed_pos, device_list_pos)
		VALUES ($1, $2, $3, $4, NULL, COALESCE((SELECT position FROM stream_heads WHERE stream = 'device_lists'), 0))
		ON CONFLICT (room_id) DO UPDATE SET join_event_id = excluded.join_event_id, servers = excluded.servers,
			created_ts = excluded.created_ts, completed_pos = NULL, device_list_pos = excluded.device_list_pos`, roomID, joinEventID, string(b), ts)
	if err != nil {
		return fmt.Errorf("recording a partial-state join: %w", err)
	}
	return nil
}

func scanPartialStateRoom(rows *sql.Rows, p *PartialStateRoom) error {
	var servers string
	if err := rows.Scan(&p.RoomID, &p.JoinEventID, &servers, &p.CompletedPos, &p.DeviceListPos); err != nil {
		return err
	}
	return json.Unmarshal([]byte(servers), &p.Servers)
}

// GetPartialStateRoom returns a room's partial-state record, or
// ErrNotFound for a room never joined with partial state.
func GetPartialStateRoom(ctx context.Context, q Reader, roomID string) (PartialStateRoom, error) {
	ps, err := queryList(ctx, q, "reading a partial-state room", `SELECT room_id, join_event_id, servers, completed_pos, device_list_pos
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
	return queryList(ctx, q, "listing partial-state rooms", `SELECT room_id, join_event_id, servers, completed_pos, device_list_pos
		FROM partial_state_rooms WHERE completed_pos IS NULL`, scanPartialStateRoom)
}

// RoomsOfUserWithPartialState is RoomsOfUser and, for those rooms only,
// the ones partial now (to nil) or whose state became complete after
// stream position since (to that position), in one query (every sync
// needs both).
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

// PartialStateServersOfUser lists the servers the send_join answers named
// (servers_in_room) of the rooms userID is joined to whose state is still
// partial: with the members not known yet, these are who share them.
func PartialStateServersOfUser(ctx context.Context, q Reader, userID string) ([]string, error) {
	lists, err := queryColumn[string](ctx, q, "listing partial-state servers", `SELECT p.servers FROM partial_state_rooms p
		JOIN current_state me ON me.room_id = p.room_id
		WHERE p.completed_pos IS NULL AND me.type = 'm.room.member' AND me.state_key = $1 AND me.membership = 'join'`, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range lists {
		var servers []string
		if err := json.Unmarshal([]byte(l), &servers); err != nil {
			return nil, fmt.Errorf("reading partial-state servers: %w", err)
		}
		out = append(out, servers...)
	}
	return out, nil
}

// AnyPartialStateRoom reports whether some room's state is partial now.
func AnyPartialStateRoom(ctx context.Context, q Reader) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM partial_state_rooms WHERE completed_pos IS NULL LIMIT 1) x`).Scan(&n); err != nil {
		return false, fmt.Errorf("looking for partial-state rooms: %w", err)
	}
	return n > 0, nil
}

// AddPendingRemoteDeviceList records a remote user whose device-list
// update came while a room's state was partial.
func AddPendingRemoteDeviceList(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO pending_remote_device_lists (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING`, userID); err != nil {
		return fmt.Errorf("recording a pending device-list update: %w", err)
	}
	return nil
}

// TakePendingRemoteDeviceLists removes and returns the pending remote users
// joined to roomID now; with roomID "", all of them.
func TakePendingRemoteDeviceLists(ctx context.Context, tx *sql.Tx, roomID string) ([]string, error) {
	query, args := `SELECT user_id FROM pending_remote_device_lists`, []any{}
	if roomID != "" {
		query += ` WHERE user_id IN (SELECT state_key FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join')`
		args = append(args, roomID)
	}
	users, err := queryColumn[string](ctx, tx, "listing pending device-list updates", query+` ORDER BY user_id`, args...)
	if err != nil || len(users) == 0 {
		return users, err
	}
	for start := 0; start < len(users); start += 500 {
		chunk := users[start:min(start+500, len(users))]
		del := make([]any, len(chunk))
		for i, u := range chunk {
			del[i] = u
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM pending_remote_device_lists WHERE user_id IN (`+placeholders(1, len(chunk))+`)`, del...); err != nil {
			return nil, fmt.Errorf("removing pending device-list updates: %w", err)
		}
	}
	return users, nil
}

// JoinedUsersWithDeviceListChangesSince lists the members joined to roomID
// whose devices or keys changed after device-list position pos.
func JoinedUsersWithDeviceListChangesSince(ctx context.Context, q Reader, roomID string, pos int64) ([]string, error) {
	return queryColumn[string](ctx, q, "listing device-list changes in a room", `SELECT DISTINCT s.user_id FROM device_list_stream s
		JOIN current_state cs ON cs.state_key = s.user_id
		WHERE cs.room_id = $1 AND cs.type = 'm.room.member' AND cs.membership = 'join' AND s.position > $2
		ORDER BY s.user_id`, roomID, pos)
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
