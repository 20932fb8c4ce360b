package clientapi

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Restricted rooms (client-server API, Restricted rooms): a join to a room
// whose join rule is restricted or knock_restricted, by a user neither
// joined nor invited, needs membership of one of the rooms the join rule
// allows, and names in content.join_authorised_via_users_server a joined
// local user able to invite, which the auth rules then check. Hearth only
// authorises joins to rooms it has; joins through other servers come with
// federation.

// joinAuthorisation returns the extra content a join by userID needs, or
// nil when it needs none.
func (a *API) joinAuthorisation(r *http.Request, roomID, userID string) (map[string]json.RawMessage, error) {
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, userID)
	if err != nil || m == spec.Join || m == spec.Invite {
		return nil, err
	}
	info, err := a.rooms.Info(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if info.JoinRule != "restricted" && info.JoinRule != "knock_restricted" {
		return nil, nil
	}
	ver, err := a.rooms.Version(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if !restrictedJoinsSupported(ver, info.JoinRule) {
		return nil, nil // the auth rules treat the join rule as invite-only
	}
	ok, err := a.joinedToAny(r.Context(), userID, info.AllowedRoomIDs)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.Forbidden("You are not a member of a room that allows joining %s", roomID)
	}
	pl, err := a.rooms.PowerLevels(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	members, err := storage.MembersOfRoom(r.Context(), a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	// The local joined member with the highest level that can invite.
	var candidates []string
	for _, mm := range members {
		if mm.Membership == spec.Join && a.isLocalUser(mm.UserID) && pl.UserLevel(spec.SenderID(mm.UserID)) >= pl.Invite {
			candidates = append(candidates, mm.UserID)
		}
	}
	if len(candidates) == 0 {
		return nil, (&mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_UNABLE_TO_GRANT_JOIN",
			Message: "No user of this server in the room can authorise the join"})
	}
	sort.Slice(candidates, func(i, j int) bool {
		li, lj := pl.UserLevel(spec.SenderID(candidates[i])), pl.UserLevel(spec.SenderID(candidates[j]))
		if li != lj {
			return li > lj
		}
		return candidates[i] < candidates[j]
	})
	via, _ := json.Marshal(candidates[0])
	return map[string]json.RawMessage{"join_authorised_via_users_server": via}, nil
}

// restrictedJoinsSupported reports whether the room version knows the join
// rule: restricted from version 8, knock_restricted from version 10.
func restrictedJoinsSupported(ver gomatrixserverlib.IRoomVersion, joinRule string) bool {
	if ver.CheckRestrictedJoinsAllowed() != nil {
		return false
	}
	v := rooms.BaseVersion(ver.Version())
	return joinRule == "restricted" || v != gomatrixserverlib.RoomVersionV8 && v != gomatrixserverlib.RoomVersionV9
}
