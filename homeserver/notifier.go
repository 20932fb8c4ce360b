package homeserver

import (
	"context"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// newNotifier starts the sync notifier at the store's current positions;
// feedNotifier is the observer that tells it about committed room events.
func newNotifier(ctx context.Context, db *storage.DB, serverName string) (*syncstream.Notifier, error) {
	var pos syncstream.Position
	var err error
	if pos.Events, err = storage.MaxStreamPos(ctx, db.Read()); err != nil {
		return nil, err
	}
	if pos.AccountData, err = db.MaxAccountDataPos(ctx); err != nil {
		return nil, err
	}
	if pos.Receipts, err = db.MaxReceiptPos(ctx); err != nil {
		return nil, err
	}
	suffix := ":" + serverName
	n := syncstream.NewNotifier(pos, func(ctx context.Context, roomID string) ([]string, error) {
		ms, err := storage.MembersOfRoom(ctx, db.Read(), roomID)
		if err != nil {
			return nil, err
		}
		var local []string
		for _, m := range ms {
			if strings.HasSuffix(m.UserID, suffix) && (m.Membership == spec.Join || m.Membership == spec.Invite || m.Membership == spec.Knock) {
				local = append(local, m.UserID)
			}
		}
		return local, nil
	})
	return n, nil
}

// feedNotifier returns the function that tells the notifier about
// committed room events.
func feedNotifier(n *syncstream.Notifier) func(evs []*rooms.Event) {
	return func(evs []*rooms.Event) {
		for _, ev := range evs {
			target, membership := "", ""
			if ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Membership != nil {
				target, membership = *ev.StateKey, *ev.Membership
			}
			n.RoomEvent(context.Background(), ev.RoomID, ev.StreamPos, target, membership)
		}
	}
}

// newEphemeral makes the in-memory typing and presence state, each change
// waking the users it concerns: a room's users for typing, everyone sharing
// a room with the user for presence.
func newEphemeral(db *storage.DB, n *syncstream.Notifier) (*syncstream.Typing, *syncstream.Presence) {
	typing := syncstream.NewTyping(func(roomID string, pos int64) {
		n.Users(n.RoomUsers(context.Background(), roomID), syncstream.Position{Typing: pos})
	})
	presence := syncstream.NewPresence(func(userID string, pos int64) {
		ctx := context.Background()
		users := map[string]bool{userID: true}
		joined, _ := storage.RoomsOfUser(ctx, db.Read(), userID, spec.Join)
		for _, m := range joined {
			for _, u := range n.RoomUsers(ctx, m.RoomID) {
				users[u] = true
			}
		}
		list := make([]string, 0, len(users))
		for u := range users {
			list = append(list, u)
		}
		n.Users(list, syncstream.Position{Presence: pos})
	})
	return typing, presence
}
