package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Room upgrades (client-server API, Room upgrades, Server behaviour).

// transferableState are the state events an upgrade copies to the new room
// (the spec's recommended list; power levels are handled apart).
var transferableState = []string{
	"m.room.server_acl", "m.room.encryption", spec.MRoomName, "m.room.avatar", spec.MRoomTopic,
	spec.MRoomGuestAccess, spec.MRoomHistoryVisibility, spec.MRoomJoinRules,
}

// Upgrade replaces oldRoomID with a new room of version newVersion, for
// userID, who must be joined and allowed to send m.room.tombstone. In one
// transaction it creates the new room (create event with predecessor and
// the old room's type, transferable state, power levels, bans and the
// canonical alias), moves the local aliases, sends the tombstone to the old
// room and raises its events_default and invite levels so that it falls
// silent. It returns the new room's ID.
//
// Upgrading to a version with privileged creators (12, MSC4289) makes the
// upgrader and additionalCreators the new room's creators: they are left
// out of the copied power levels, and the upgrader needs no temporary
// raise. The predecessor then names only the old room (MSC4291).
func (r *Rooms) Upgrade(ctx context.Context, oldRoomID, userID string, newVersion gomatrixserverlib.RoomVersion, additionalCreators []string) (string, error) {
	if !IsSupported(string(newVersion)) {
		return "", mxhttp.UnsupportedVersion("Room version %q is not supported", newVersion)
	}
	newVer := gomatrixserverlib.MustGetRoomVersion(newVersion)
	if len(additionalCreators) > 0 && !newVer.PrivilegedCreators() {
		return "", mxhttp.InvalidParam("additional_creators needs a room version with privileged creators")
	}
	for _, u := range additionalCreators {
		if _, err := spec.NewUserID(u, true); err != nil {
			return "", mxhttp.InvalidParam("additional_creators: %q is not a valid user ID", u)
		}
	}
	st, err := r.CurrentState(ctx, oldRoomID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", mxhttp.NotFound("Unknown room %s", oldRoomID)
	}
	if err != nil {
		return "", err
	}
	if m, _, err := r.MembershipOf(ctx, oldRoomID, userID); err != nil {
		return "", err
	} else if m != spec.Join {
		return "", mxhttp.Forbidden("You are not joined to %s", oldRoomID)
	}
	pl, err := r.PowerLevels(ctx, oldRoomID)
	if err != nil {
		return "", err
	}
	level := pl.UserLevel(spec.SenderID(userID))
	if level < pl.EventLevel("m.room.tombstone", true) {
		return "", mxhttp.Forbidden("You may not upgrade %s: you cannot send m.room.tombstone", oldRoomID)
	}
	stateEvs, err := r.StateEvents(ctx, st)
	if err != nil {
		return "", err
	}
	byKey := map[storage.StateKey]*Event{}
	for _, ev := range stateEvs {
		byKey[storage.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = ev
	}
	room, err := storage.GetRoom(ctx, r.db.Read(), oldRoomID)
	if err != nil {
		return "", err
	}

	req := CreateRequest{Creator: userID, Version: newVersion, Preset: "private_chat"}
	predecessor := map[string]string{"room_id": oldRoomID}
	if len(room.Extremities) > 0 && !newVer.DomainlessRoomIDs() {
		predecessor["event_id"] = room.Extremities[len(room.Extremities)-1]
	}
	req.CreationContent = map[string]json.RawMessage{}
	req.CreationContent["predecessor"], _ = json.Marshal(predecessor)
	if len(additionalCreators) > 0 {
		req.CreationContent["additional_creators"], _ = json.Marshal(additionalCreators)
	}
	if create := byKey[storage.StateKey{Type: spec.MRoomCreate}]; create != nil {
		var c map[string]json.RawMessage
		_ = json.Unmarshal(create.PDU.Content(), &c)
		for _, k := range []string{"type", "m.federate"} {
			if v, ok := c[k]; ok {
				req.CreationContent[k] = v
			}
		}
	}
	// Power levels: the old room's, with the upgrader raised to 100 while
	// the new room is set up if they had less; the old levels are then
	// restored as the last event.
	var plContent map[string]json.RawMessage
	if ev := byKey[storage.StateKey{Type: spec.MRoomPowerLevels}]; ev != nil {
		_ = json.Unmarshal(ev.PDU.Content(), &plContent)
	}
	var restorePL json.RawMessage
	if plContent != nil {
		override := map[string]json.RawMessage{}
		for k, v := range plContent {
			override[k] = v
		}
		if newVer.PrivilegedCreators() {
			users := map[string]json.RawMessage{}
			_ = json.Unmarshal(plContent["users"], &users)
			delete(users, userID)
			for _, u := range additionalCreators {
				delete(users, u)
			}
			override["users"], _ = json.Marshal(users)
		} else if level < 100 {
			users := map[string]int64{}
			_ = json.Unmarshal(plContent["users"], &users)
			users[userID] = 100
			override["users"], _ = json.Marshal(users)
			restorePL, _ = json.Marshal(plContent)
		}
		req.PowerLevelContentOverride = override
	}
	for _, typ := range transferableState {
		if ev := byKey[storage.StateKey{Type: typ}]; ev != nil {
			req.InitialState = append(req.InitialState, StateEvent{Type: typ, Content: json.RawMessage(ev.PDU.Content())})
		}
	}
	newProtos, err := r.createProtos(ctx, req, req.Invite)
	if err != nil {
		return "", err
	}
	newRoomID, err := r.newRoomID(newVersion, newProtos)
	if err != nil {
		return "", err
	}
	proto := func(typ, key string, content json.RawMessage) Proto {
		k := key
		return Proto{Sender: userID, Type: typ, StateKey: &k, Content: content}
	}
	var aliasContent json.RawMessage
	if ev := byKey[storage.StateKey{Type: spec.MRoomCanonicalAlias}]; ev != nil && len(ev.PDU.Content()) > 2 {
		aliasContent = json.RawMessage(ev.PDU.Content())
		newProtos = append(newProtos, proto(spec.MRoomCanonicalAlias, "", aliasContent))
	}
	for k, ev := range byKey {
		if k.Type == spec.MRoomMember && ev.Membership != nil && *ev.Membership == spec.Ban {
			newProtos = append(newProtos, proto(spec.MRoomMember, k.StateKey, json.RawMessage(`{"membership":"ban"}`)))
		}
	}
	if restorePL != nil {
		newProtos = append(newProtos, proto(spec.MRoomPowerLevels, "", restorePL))
	}

	tombstone, _ := json.Marshal(map[string]string{"body": "This room has been replaced", "replacement_room": newRoomID})
	oldProtos := []Proto{proto("m.room.tombstone", "", tombstone)}
	if aliasContent != nil && level >= pl.EventLevel(spec.MRoomCanonicalAlias, true) {
		// The aliases now point at the new room: the old one loses them.
		oldProtos = append(oldProtos, proto(spec.MRoomCanonicalAlias, "", json.RawMessage(`{}`)))
	}
	if plContent != nil {
		if restricted, ok := silencedPowerLevels(plContent, pl, level); ok {
			oldProtos = append(oldProtos, proto(spec.MRoomPowerLevels, "", restricted))
		}
	}

	unlockOld := r.locks.lock(oldRoomID)
	defer unlockOld()
	unlockNew := r.locks.lock(newRoomID)
	defer unlockNew()
	var out []*Event
	var snaps []*snapshot
	write := func(ctx context.Context, tx *sql.Tx) error {
		out, snaps = nil, nil
		newRoom := storage.Room{RoomID: newRoomID, Version: string(newVersion), Extremities: []string{}, CreatedTS: time.Now().UnixMilli()}
		if err := storage.InsertRoom(ctx, tx, newRoom); err != nil {
			return err
		}
		evs, s, err := r.appendLocal(ctx, tx, &newRoom, newProtos)
		if err != nil {
			return err
		}
		out, snaps = append(out, evs...), append(snaps, s...)
		if err := storage.MoveAliases(ctx, tx, oldRoomID, newRoomID); err != nil {
			return err
		}
		old, err := r.db.LockRoom(ctx, tx, oldRoomID)
		if err != nil {
			return err
		}
		if old.Published {
			if err := storage.SetPublishedTx(ctx, tx, oldRoomID, false); err != nil {
				return err
			}
			if err := storage.SetPublishedTx(ctx, tx, newRoomID, true); err != nil {
				return err
			}
		}
		evs, s, err = r.appendLocal(ctx, tx, &old, oldProtos)
		if err != nil {
			return err
		}
		out, snaps = append(out, evs...), append(snaps, s...)
		return nil
	}
	if p, err := r.remotePolicy(ctx, oldRoomID); err != nil {
		return "", err
	} else if p != nil {
		// The old room's events are signed by its policy server first
		// (policy.go), the room staying locked.
		pdus, err := r.dryRun(ctx, oldRoomID, func(ctx context.Context, tx *sql.Tx) ([]*Event, error) {
			err := write(ctx, tx)
			return out, err
		})
		if err != nil {
			return "", err
		}
		if oldProtos, err = r.signProtos(ctx, p, oldProtos, pdus); err != nil {
			return "", err
		}
	}
	if err = r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := write(ctx, tx); err != nil {
			return err
		}
		return r.runTxHook(ctx, tx, out) // push, in the events' transaction
	}); err != nil {
		return "", err
	}
	r.committed(out, snaps)
	return newRoomID, nil
}

// silencedPowerLevels raises events_default and invite of an old room's
// power levels to the greater of 50 and users_default+1 (client-server
// API, Room upgrades, step 6), when they are lower and the upgrader's
// level allows the change.
func silencedPowerLevels(content map[string]json.RawMessage, pl *gomatrixserverlib.PowerLevelContent, level int64) (json.RawMessage, bool) {
	target := max(int64(50), pl.UsersDefault+1)
	if target > level || level < pl.EventLevel(spec.MRoomPowerLevels, true) {
		return nil, false
	}
	if pl.EventsDefault >= target && pl.Invite >= target {
		return nil, false
	}
	c := map[string]json.RawMessage{}
	for k, v := range content {
		c[k] = v
	}
	if pl.EventsDefault < target {
		c["events_default"], _ = json.Marshal(target)
	}
	if pl.Invite < target {
		c["invite"], _ = json.Marshal(target)
	}
	b, _ := json.Marshal(c)
	return b, true
}
