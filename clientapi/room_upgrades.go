package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/storage"
)

// Room upgrades (client-server API, Room upgrades): the work is
// rooms.Upgrade, one transaction.

// POST /v3/rooms/{roomId}/upgrade
func (a *API) upgradeRoom(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	var body struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.NewVersion == nil || *body.NewVersion == "" {
		return nil, mxhttp.BadJSON("new_version is required")
	}
	newRoomID, err := a.rooms.Upgrade(r.Context(), roomID, c.UserID, gomatrixserverlib.RoomVersion(*body.NewVersion), body.AdditionalCreators)
	if err != nil {
		return nil, err
	}
	if err := a.copyPushRules(r, roomID, newRoomID); err != nil {
		a.log.Warn("copying push rules to an upgraded room", "room", roomID, "err", err)
	}
	return map[string]string{"replacement_room": newRoomID}, nil
}

// copyPushRules gives every local member of the old room (joined before the
// upgrade) copies of their push rules about it for the new room: room rules
// named after the room, and override and underride rules matching its ID
// (client-server API, Room upgrades: "transfer ... notifications").
func (a *API) copyPushRules(r *http.Request, oldRoomID, newRoomID string) error {
	members, err := storage.MembersOfRoom(r.Context(), a.db.Read(), oldRoomID)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.Membership != spec.Join || !a.isLocalUser(m.UserID) {
			continue
		}
		changed := false
		pos, err := a.db.UpdateAccountData(r.Context(), m.UserID, "", pushRulesType, func(old []byte, _ bool) ([]byte, error) {
			u, err := pushrules.ParseUserRules(old)
			if err != nil {
				return nil, err
			}
			changed = u.CopyRoomRules(oldRoomID, newRoomID)
			return json.Marshal(u)
		})
		if err != nil {
			return err
		}
		if changed {
			a.accountDataChanged(m.UserID, pos)
		}
	}
	return nil
}

// copyPushRulesOnJoin gives a user who joins a room that replaces another
// (its create event names a predecessor) their push rules about the old
// room, as Synapse does; upgrades made by hand (createRoom with a
// predecessor) and remote upgrades are covered this way.
func (a *API) copyPushRulesOnJoin(ctx context.Context, userID, roomID string) {
	createID, err := a.rooms.CurrentStateID(ctx, roomID, storage.StateKey{Type: spec.MRoomCreate})
	if err != nil || createID == "" {
		return
	}
	create, err := a.rooms.Event(ctx, createID)
	if err != nil {
		return
	}
	var content struct {
		Predecessor *struct {
			RoomID string `json:"room_id"`
		} `json:"predecessor"`
	}
	if json.Unmarshal(create.PDU.Content(), &content) != nil || content.Predecessor == nil || content.Predecessor.RoomID == "" {
		return
	}
	old := content.Predecessor.RoomID
	d, err := a.db.GetAccountData(ctx, userID, "", pushRulesType)
	if err != nil {
		return // no stored rules: nothing about the old room to copy
	}
	probe, err := pushrules.ParseUserRules(d.Content)
	if err != nil || !probe.CopyRoomRules(old, roomID) {
		return
	}
	pos, err := a.db.UpdateAccountData(ctx, userID, "", pushRulesType, func(b []byte, _ bool) ([]byte, error) {
		u, err := pushrules.ParseUserRules(b)
		if err != nil {
			return nil, err
		}
		u.CopyRoomRules(old, roomID)
		return json.Marshal(u)
	})
	if err != nil {
		a.log.Warn("copying push rules to a room's successor", "room", roomID, "err", err)
		return
	}
	a.accountDataChanged(userID, pos)
}
