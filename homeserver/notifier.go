package homeserver

import (
	"context"
	"database/sql"
	"log/slog"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// newNotifier starts the sync notifier at the store's current positions;
// feedNotifier is the observer that tells it about committed room events.
func newNotifier(ctx context.Context, db *storage.DB, serverName string) (*syncstream.Notifier, error) {
	pos, err := storedPositions(ctx, db)
	if err != nil {
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

// storedPositions are the newest positions of the streams kept in the
// database.
func storedPositions(ctx context.Context, db *storage.DB) (syncstream.Position, error) {
	var pos syncstream.Position
	var err error
	if pos.Events, err = storage.MaxStreamPos(ctx, db.Read()); err != nil {
		return pos, err
	}
	if pos.AccountData, err = db.MaxAccountDataPos(ctx); err != nil {
		return pos, err
	}
	if pos.Receipts, err = db.MaxReceiptPos(ctx); err != nil {
		return pos, err
	}
	if pos.ToDevice, err = storage.MaxToDevicePos(ctx, db.Read()); err != nil {
		return pos, err
	}
	if pos.DeviceLists, err = storage.MaxDeviceListPos(ctx, db.Read()); err != nil {
		return pos, err
	}
	pos.ThreadSubs, err = db.MaxThreadSubscriptionPos(ctx)
	return pos, err
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
// a room with the user for presence. presenceChanged and typingChanged,
// when not nil, are told of every change too, made here or in another
// process.
func newEphemeral(db *storage.DB, n *syncstream.Notifier, presenceChanged func(syncstream.PresenceChange), typingChanged func(roomID string)) (*syncstream.Typing, *syncstream.Presence) {
	typing := syncstream.NewTyping(func(roomID string, pos int64) {
		n.Users(n.RoomUsers(context.Background(), roomID), syncstream.Position{Typing: pos})
		if typingChanged != nil {
			typingChanged(roomID)
		}
	})
	presence := syncstream.NewPresence(func(c syncstream.PresenceChange) {
		ctx := context.Background()
		users := map[string]bool{c.User: true}
		joined, _ := storage.RoomsOfUser(ctx, db.Read(), c.User, spec.Join)
		for _, m := range joined {
			for _, u := range n.RoomUsers(ctx, m.RoomID) {
				users[u] = true
			}
		}
		list := make([]string, 0, len(users))
		for u := range users {
			list = append(list, u)
		}
		n.Users(list, syncstream.Position{Presence: c.State.Pos})
		if presenceChanged != nil {
			presenceChanged(c)
		}
	})
	return typing, presence
}

// wireE2EE connects the E2EE module: device-list changes when devices are
// added or deleted, and sync wake-ups for to-device messages and device
// lists, with the stream positions the changes committed at.
func wireE2EE(db *storage.DB, accts *accounts.Accounts, e *e2ee.E2EE, n *syncstream.Notifier) {
	// /keys/changes takes sync tokens; its positions are device-list ones.
	e.TokenPosition = func(token string) (e2ee.Positions, error) {
		p, err := syncstream.ParseToken(token)
		return e2ee.Positions{Events: p.Events, DeviceLists: p.DeviceLists}, err
	}
	e.OnChange = func(userIDs []string, deviceID string) {
		toDevice, deviceLists, err := e.MaxPositions(context.Background())
		if err != nil {
			return
		}
		if deviceID != "" {
			for _, u := range userIDs {
				n.Device(u, deviceID, toDevice)
			}
			return
		}
		n.Users(userIDs, syncstream.Position{DeviceLists: deviceLists})
	}
	accts.OnDeviceAdded(func(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
		db.AfterCommit(tx, func() { e.NotifyDeviceListChange(context.Background(), userID) })
		return e.RecordDeviceListChange(ctx, tx, userID, deviceID)
	})
	accts.OnDevicesDeleted(func(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
		for _, d := range deviceIDs {
			if err := e.DeviceDeleted(ctx, tx, userID, d); err != nil {
				return err
			}
		}
		db.AfterCommit(tx, func() { e.NotifyDeviceListChange(context.Background(), userID) })
		return nil
	})
}

// wireDeviceAccountData deletes what belongs to a device with it: its mark
// as the user's dehydrated device (MSC3814), and its local notification
// settings, which live in account data named after the device (MSC3890).
func wireDeviceAccountData(db *storage.DB, accts *accounts.Accounts, n *syncstream.Notifier) {
	accts.OnDevicesDeleted(func(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
		if err := storage.ForgetDehydratedDevices(ctx, tx, userID, deviceIDs); err != nil {
			return err
		}
		var last int64
		for _, d := range deviceIDs {
			pos, err := db.DeleteAccountDataTx(ctx, tx, userID, "", localNotificationSettingsPrefix+d)
			if err != nil {
				return err
			}
			last = max(last, pos)
		}
		if last > 0 {
			db.AfterCommit(tx, func() { n.Users([]string{userID}, syncstream.Position{AccountData: last}) })
		}
		return nil
	})
}

// localNotificationSettingsPrefix is MSC3890's per-device account data type
// (unstable name, as Element writes it) without the device ID.
const localNotificationSettingsPrefix = "org.matrix.msc3890.local_notification_settings."

// watchMemberships tells end-to-end encryption of every committed
// membership change, so it drops the device lists of remote users no
// local user shares a room with any more.
func watchMemberships(e *e2ee.E2EE, log *slog.Logger) func(evs []*rooms.Event) {
	return func(evs []*rooms.Event) {
		for _, ev := range evs {
			if ev.Type != spec.MRoomMember || ev.StateKey == nil || ev.Membership == nil || ev.Outlier || ev.Rejected {
				continue
			}
			if err := e.MembershipChanged(context.Background(), ev.RoomID, *ev.StateKey, *ev.Membership); err != nil {
				log.Warn("updating remote device lists after a membership change", "room", ev.RoomID, "user_id", *ev.StateKey, "err", err)
			}
		}
	}
}
