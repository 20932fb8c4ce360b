package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// Room directory and user directory queries.

// PublishedRooms lists the rooms in the public room directory.
func PublishedRooms(ctx context.Context, q Reader) ([]string, error) {
	return queryColumn[string](ctx, q, "listing published rooms", `SELECT room_id FROM rooms WHERE published ORDER BY room_id`)
}

// JoinedMemberCount counts a room's joined members.
func JoinedMemberCount(ctx context.Context, q Reader, roomID string) (int, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND membership = 'join'`, roomID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting members: %w", err)
	}
	return n, nil
}

// CurrentStateOfType returns (room ID, event JSON) of every room's current
// state event of one type with an empty state key.
func CurrentStateOfType(ctx context.Context, q Reader, eventType string) (map[string][]byte, error) {
	return queryMap[string, []byte](ctx, q, "reading "+eventType+" state", `SELECT cs.room_id, e.json FROM current_state cs JOIN events e ON e.event_id = cs.event_id
		WHERE cs.type = $1 AND cs.state_key = ''`, eventType)
}

// DirectoryUser is a joined member found by the user directory, with the
// member event's JSON (for remote users' display names).
type DirectoryUser struct {
	UserID      string
	MemberJSON  []byte
	DisplayName *string // the local profile's, when the user is local
	AvatarURL   *string
}

// JoinedMembersOfRooms returns the users joined to any of rooms, once each,
// with their profile when local; deactivated local users are left out
// (they leave their rooms, but a leave can fail: the directory must not
// show them meanwhile).
func JoinedMembersOfRooms(ctx context.Context, q Reader, rooms []string) ([]DirectoryUser, error) {
	var out []DirectoryUser
	seen := map[string]bool{}
	for start := 0; start < len(rooms); start += 500 {
		chunk := rooms[start:min(start+500, len(rooms))]
		args := make([]any, len(chunk))
		for i, r := range chunk {
			args[i] = r
		}
		err := queryEach(ctx, q, "listing joined members", `SELECT cs.state_key, e.json, p.displayname, p.avatar_url FROM current_state cs
			JOIN events e ON e.event_id = cs.event_id
			LEFT JOIN profiles p ON p.user_id = cs.state_key
			LEFT JOIN users u ON u.user_id = cs.state_key
			WHERE cs.type = 'm.room.member' AND cs.membership = 'join' AND NOT COALESCE(u.deactivated, FALSE)
			AND cs.room_id IN (`+placeholders(1, len(chunk))+`)`, args, func(rows *sql.Rows) error {
			var u DirectoryUser
			var js string
			if err := rows.Scan(&u.UserID, &js, &u.DisplayName, &u.AvatarURL); err != nil {
				return err
			}
			if seen[u.UserID] {
				return nil
			}
			seen[u.UserID] = true
			u.MemberJSON = []byte(js)
			out = append(out, u)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// MoveAliases points every alias of room from at room to.
func MoveAliases(ctx context.Context, tx *sql.Tx, from, to string) error {
	_, err := tx.ExecContext(ctx, `UPDATE room_aliases SET room_id = $1 WHERE room_id = $2`, to, from)
	if err != nil {
		return fmt.Errorf("moving aliases: %w", err)
	}
	return nil
}

// SetPublishedTx sets a room's directory visibility inside a transaction.
func SetPublishedTx(ctx context.Context, tx *sql.Tx, roomID string, published bool) error {
	_, err := tx.ExecContext(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, published, roomID)
	if err != nil {
		return fmt.Errorf("publishing room: %w", err)
	}
	return nil
}
