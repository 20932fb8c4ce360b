package e2ee

import (
	"context"
	"database/sql"
	"slices"

	"github.com/hearth-matrix/hearth/storage"
)

// Device lists while a room's state is partial (MSC3902, "Device
// management"): the members of such a room are not known, so
//   - local changes go also to the servers its send_join answer named
//     (deviceListDestinations), and once the state is complete, the local
//     changes made meanwhile go to the servers the answer did not name but
//     that were in the room (StateCompleted);
//   - a remote update about a user sharing no room with a local user is
//     not dropped while a room is partial: the user is kept pending, and
//     shown as changed to the room's members once its state is complete
//     and shows them joined.

// keepPending records userID's device-list update, ignored because the
// user shares no room with a local user, if some room's state is partial
// (the user may be one of its members).
func (e *E2EE) keepPending(ctx context.Context, userID string) error {
	if partial, err := storage.AnyPartialStateRoom(ctx, e.db.Read()); err != nil || !partial {
		return err
	}
	if err := e.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.AddPendingRemoteDeviceList(ctx, tx, userID) }); err != nil {
		return err
	}
	// A room that became complete between the check above and now has not
	// seen the row: if the user shares a room now, show the change here.
	if ok, err := e.sharesRoomWithLocalUser(ctx, e.db.Read(), userID); err != nil || !ok {
		return err
	}
	return e.showPending(ctx, "")
}

// showPending shows the pending users joined to roomID (all pending users
// sharing a room with a local user, for "") as changed, and forgets them;
// with no room partial any more, it forgets the others too.
func (e *E2EE) showPending(ctx context.Context, roomID string) error {
	var shown []string
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		shown = nil
		users, err := storage.TakePendingRemoteDeviceLists(ctx, tx, roomID)
		if err != nil {
			return err
		}
		for _, u := range users {
			if roomID == "" {
				if ok, err := e.sharesRoomWithLocalUser(ctx, tx, u); err != nil {
					return err
				} else if !ok {
					if err := storage.AddPendingRemoteDeviceList(ctx, tx, u); err != nil {
						return err
					}
					continue
				}
			}
			if _, err := e.db.AppendDeviceListChange(ctx, tx, u); err != nil {
				return err
			}
			shown = append(shown, u)
		}
		if partial, err := storage.AnyPartialStateRoom(ctx, tx); err != nil || partial {
			return err
		}
		_, err = storage.TakePendingRemoteDeviceLists(ctx, tx, "")
		return err
	})
	if err != nil {
		return err
	}
	for _, u := range shown {
		e.NotifyDeviceListChange(ctx, u)
	}
	return nil
}

// StateCompleted brings device lists up to date once a partial-state
// room's state is complete. servers are those its send_join answer named,
// deviceListPos the device-list stream head at the join; membersChanged
// are the users whose current membership the full state changed, and
// changedSinceJoin those whose membership differs between the state at
// the join and the current state.
func (e *E2EE) StateCompleted(ctx context.Context, roomID string, servers []string, deviceListPos int64, membersChanged, changedSinceJoin []string) error {
	// A remote user believed joined who is not: we no longer follow them.
	for _, u := range membersChanged {
		if e.isLocal(u) {
			continue
		}
		if err := e.forgetIfUnshared(ctx, u); err != nil {
			return err
		}
	}
	if err := e.showPending(ctx, roomID); err != nil {
		return err
	}
	if e.remote == nil {
		return nil
	}
	return e.sendMissedChanges(ctx, roomID, servers, deviceListPos, changedSinceJoin)
}

// forgetIfUnshared drops what we keep of a remote user's devices once no
// local user shares a room with them (their server stops telling us).
func (e *E2EE) forgetIfUnshared(ctx context.Context, userID string) error {
	q := e.db.Read()
	if _, have, err := storage.RemoteDeviceListStreamID(ctx, q, userID); err != nil || !have {
		return err
	}
	shares, err := e.sharesRoomWithLocalUser(ctx, q, userID)
	if err != nil || shares {
		return err
	}
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.ForgetRemoteDeviceList(ctx, tx, userID, false) })
}

// sendMissedChanges sends the devices of the room's local users that
// changed since the join to the servers that may have been in the room
// meanwhile but were not told: those of the users whose membership
// changed since the join and those in the room now, less the servers the
// send_join answer named (they were told as the changes happened).
func (e *E2EE) sendMissedChanges(ctx context.Context, roomID string, told []string, deviceListPos int64, changedSinceJoin []string) error {
	q := e.db.Read()
	changedUsers, err := storage.JoinedUsersWithDeviceListChangesSince(ctx, q, roomID, deviceListPos)
	if err != nil {
		return err
	}
	changedUsers = slices.DeleteFunc(changedUsers, func(u string) bool { return !e.isLocal(u) })
	if len(changedUsers) == 0 {
		return nil
	}
	hosts := map[string]bool{}
	for _, u := range changedSinceJoin {
		hosts[serverOf(u)] = true
	}
	members, err := storage.MembersOfRoom(ctx, q, roomID)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.Membership == "join" {
			hosts[serverOf(m.UserID)] = true
		}
	}
	for _, s := range told {
		delete(hosts, s)
	}
	delete(hosts, e.serverName)
	delete(hosts, "")
	if len(hosts) == 0 {
		return nil
	}
	servers := sortedKeys(hosts)
	e.log.Info("sending device-list changes made during a partial-state join", "room", roomID, "users", len(changedUsers), "servers", len(servers))
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		for _, u := range changedUsers {
			if err := e.queueDeviceList(ctx, tx, u, servers); err != nil {
				return err
			}
		}
		return nil
	})
}
