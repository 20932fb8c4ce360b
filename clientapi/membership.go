package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Room membership (client-server API, Room membership).

type membershipBody struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
	// Extra are other fields of a join body, which go into the member
	// event's content as Synapse does (clients use it for e.g. room-specific
	// metadata).
	Extra map[string]json.RawMessage `json:"-"`
}

// readMembershipBody reads the optional JSON body of a membership request;
// an empty body is allowed where the spec makes every field optional.
func readMembershipBody(r *http.Request, needUser bool) (membershipBody, error) {
	var b membershipBody
	if r.ContentLength != 0 {
		var raw map[string]json.RawMessage
		if err := mxhttp.ReadJSON(r, &raw); err != nil {
			var me *mxhttp.Error
			if !(errors.As(err, &me) && me.Message == "Request body is empty; expected a JSON object") {
				return b, err
			}
		}
		for k, v := range raw {
			switch k {
			case "user_id":
				if json.Unmarshal(v, &b.UserID) != nil {
					return b, mxhttp.BadJSON("user_id must be a string")
				}
			case "reason":
				if json.Unmarshal(v, &b.Reason) != nil {
					return b, mxhttp.BadJSON("reason must be a string")
				}
			case "membership", "third_party_signed", "displayname", "avatar_url", "join_authorised_via_users_server":
			default:
				if b.Extra == nil {
					b.Extra = map[string]json.RawMessage{}
				}
				b.Extra[k] = v
			}
		}
	}
	if needUser {
		if b.UserID == "" {
			return b, mxhttp.MissingParam("user_id is required")
		}
		if _, err := spec.NewUserID(b.UserID, true); err != nil {
			return b, mxhttp.InvalidParam("Invalid user_id %q", b.UserID)
		}
	}
	return b, nil
}

func (a *API) changeMembership(r *http.Request, roomID string, c rooms.ChangeMembership) (any, error) {
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if c.Membership == spec.Join && c.Sender == c.Target {
		extra, err := a.joinAuthorisation(r, roomID, c.Sender)
		if err != nil {
			return nil, err
		}
		for k, v := range extra {
			if c.Extra == nil {
				c.Extra = map[string]json.RawMessage{}
			}
			c.Extra[k] = v
		}
	}
	if _, err := a.rooms.SetMembership(r.Context(), roomID, c); err != nil {
		return nil, err
	}
	if c.Membership == spec.Join && c.Sender == c.Target {
		a.copyPushRulesOnJoin(r.Context(), c.Sender, roomID)
	}
	if c.Membership == spec.Join || c.Membership == spec.Knock {
		return map[string]string{"room_id": roomID}, nil
	}
	return map[string]any{}, nil
}

// POST /rooms/{roomId}/join
func (a *API) joinRoomByID(r *http.Request, c accounts.Caller) (any, error) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		return nil, err
	}
	return a.join(r, c, pathParam(r, "roomId"), nil, b)
}

// join joins the caller to a room: through our own copy of the room when a
// local user is in it, else over federation through the given servers (and
// the server of the room ID).
func (a *API) join(r *http.Request, c accounts.Caller, roomID string, servers []spec.ServerName, b membershipBody) (any, error) {
	if err := a.refuseSuspended(r, c, roomID); err != nil {
		return nil, err
	}
	reason := b.Reason
	local, err := a.rooms.CanJoinLocally(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if local {
		// MSC3902: a partial state cannot tell whether the user may join
		// (a ban it does not hold): unless they are joined already, a
		// server with the full state makes the join (as Synapse does).
		partial, err := a.rooms.IsPartialState(r.Context(), roomID)
		if err != nil {
			return nil, err
		}
		if partial {
			if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID); err == nil && m == spec.Join {
				partial = false
			}
		}
		if partial {
			others, err := a.rooms.ServersInRoom(r.Context(), roomID)
			if err != nil {
				return nil, err
			}
			servers = append(servers, others...)
			local = false
		}
	}
	if local {
		_, err := a.joinAuthorisation(r, roomID, c.UserID)
		var me *mxhttp.Error
		if !errors.As(err, &me) || me.ErrCode != "M_UNABLE_TO_GRANT_JOIN" {
			return a.changeMembership(r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Join, Reason: reason, Extra: b.Extra})
		}
		// A restricted room none of our users can authorise the join to:
		// join through a server in the room that can.
		others, err := a.rooms.ServersInRoom(r.Context(), roomID)
		if err != nil {
			return nil, err
		}
		servers = append(servers, others...)
	}
	q := r.URL.Query()
	for _, v := range append(q["via"], q["server_name"]...) {
		servers = append(servers, spec.ServerName(v))
	}
	if m, evID, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID); err == nil && m == spec.Invite {
		if inv, err := a.rooms.Event(r.Context(), evID); err == nil {
			if _, domain, err := gomatrixserverlib.SplitID('@', inv.Sender); err == nil {
				servers = append(servers, domain) // the inviter's server is in the room
			}
		}
	}
	if len(servers) == 0 {
		// Nothing to go on but the room ID's server (not a promise that it
		// is still in the room).
		if _, domain, err := gomatrixserverlib.SplitID('!', roomID); err == nil {
			servers = append(servers, domain)
		}
	}
	content := map[string]any{}
	for k, v := range b.Extra {
		content[k] = v
	}
	if reason != "" {
		content["reason"] = reason
	}
	if p, err := a.db.GetProfile(r.Context(), c.UserID); err == nil {
		if p.DisplayName != nil {
			content["displayname"] = *p.DisplayName
		}
		if p.AvatarURL != nil {
			content["avatar_url"] = *p.AvatarURL
		}
	}
	if _, err := a.rooms.JoinRemote(r.Context(), roomID, c.UserID, servers, content); err != nil {
		return nil, err
	}
	a.copyPushRulesOnJoin(r.Context(), c.UserID, roomID)
	return map[string]string{"room_id": roomID}, nil
}

// resolveRoom turns a room ID or alias into a room ID and the servers to
// try for a remote join: the alias's answer, or the via (and deprecated
// server_name) query parameters given with a room ID.
func (a *API) resolveRoom(r *http.Request, idOrAlias string) (roomID string, via []string, err error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		q := r.URL.Query()
		return idOrAlias, append(q["via"], q["server_name"]...), nil
	case strings.HasPrefix(idOrAlias, "#"):
		return a.resolveAlias(r.Context(), idOrAlias)
	default:
		return "", nil, mxhttp.InvalidParam("%q is neither a room ID nor a room alias", idOrAlias)
	}
}

// POST /join/{roomIdOrAlias}
func (a *API) joinRoomByIDOrAlias(r *http.Request, c accounts.Caller) (any, error) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		return nil, err
	}
	// The via servers (from the alias or the query) are for a remote join.
	roomID, via, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	servers := make([]spec.ServerName, 0, len(via))
	for _, v := range via {
		servers = append(servers, spec.ServerName(v))
	}
	return a.join(r, c, roomID, servers, b)
}

// POST /knock/{roomIdOrAlias}
func (a *API) knock(r *http.Request, c accounts.Caller) (any, error) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		return nil, err
	}
	roomID, via, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	local, err := a.rooms.CanJoinLocally(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	if !local {
		// A room whose live copy is on other servers: knock through them.
		servers := make([]spec.ServerName, 0, len(via))
		for _, v := range via {
			servers = append(servers, spec.ServerName(v))
		}
		if _, err := a.rooms.KnockRemote(r.Context(), roomID, c.UserID, b.Reason, servers); err != nil {
			return nil, err
		}
		return map[string]string{"room_id": roomID}, nil
	}
	return a.changeMembership(r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Knock, Reason: b.Reason})
}

// changeOther makes a membership change the caller applies to another user
// (invite, kick, ban, unban), refusing it first when the target's current
// membership makes it meaningless; the auth rules decide the rest.
func (a *API) changeOther(r *http.Request, c accounts.Caller, membership string, refuse func(target, current string) error) (any, error) {
	b, err := readMembershipBody(r, true)
	if err != nil {
		return nil, err
	}
	roomID := pathParam(r, "roomId")
	if refuse != nil {
		if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, b.UserID); err == nil {
			if err := refuse(b.UserID, m); err != nil {
				return nil, err
			}
		}
	}
	return a.changeMembership(r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: b.UserID, Membership: membership, Reason: b.Reason})
}

// POST /rooms/{roomId}/invite
func (a *API) invite(r *http.Request, c accounts.Caller) (any, error) {
	if shadowBanned(c) {
		return struct{}{}, nil // Synapse: the invite seems sent
	}
	return a.changeOther(r, c, spec.Invite, func(target, m string) error {
		if m == spec.Join || m == spec.Ban {
			return mxhttp.Forbidden("%s is already %s in the room", target, map[string]string{spec.Join: "joined", spec.Ban: "banned"}[m])
		}
		return nil
	})
}

// POST /rooms/{roomId}/leave
func (a *API) leave(r *http.Request, c accounts.Caller) (any, error) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		return nil, err
	}
	if err := a.refuseNoticeRoomReject(r, pathParam(r, "roomId"), c.UserID); err != nil {
		return nil, err
	}
	return a.changeMembership(r, pathParam(r, "roomId"), rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Leave, Reason: b.Reason})
}

// POST /rooms/{roomId}/kick
func (a *API) kick(r *http.Request, c accounts.Caller) (any, error) {
	return a.changeOther(r, c, spec.Leave, func(target, m string) error {
		if m != spec.Join && m != spec.Invite && m != spec.Knock {
			return mxhttp.Forbidden("%s is not in the room", target)
		}
		return nil
	})
}

// POST /rooms/{roomId}/ban
func (a *API) ban(r *http.Request, c accounts.Caller) (any, error) {
	return a.changeOther(r, c, spec.Ban, nil)
}

// POST /rooms/{roomId}/unban
func (a *API) unban(r *http.Request, c accounts.Caller) (any, error) {
	return a.changeOther(r, c, spec.Leave, func(target, m string) error {
		if m != spec.Ban {
			return mxhttp.Forbidden("%s is not banned", target)
		}
		return nil
	})
}

// POST /rooms/{roomId}/forget
func (a *API) forget(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	if m == spec.Join || m == spec.Invite || m == spec.Knock {
		return nil, mxhttp.Unknown("You must leave the room before forgetting it")
	}
	if m == "" {
		return nil, mxhttp.NotFound("You were never in %s", roomID)
	}
	if err := a.db.ForgetRoom(r.Context(), c.UserID, roomID); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// GET /rooms/{roomId}/members
func (a *API) members(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	// MSC3902: the remote members are known once the resync is done.
	if err := a.rooms.AwaitFullState(r.Context(), roomID); err != nil {
		return nil, err
	}
	st, err := a.visibleState(r, roomID, c.UserID)
	if err != nil {
		return nil, err
	}
	if at := r.URL.Query().Get("at"); at != "" {
		if st, err = a.stateAtToken(r, roomID, at, st); err != nil {
			return nil, err
		}
	}
	var memberState = rooms.State{}
	for k, id := range st {
		if k.Type == spec.MRoomMember {
			memberState[k] = id
		}
	}
	evs, err := a.rooms.StateEvents(r.Context(), memberState)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	want, notWant := q.Get("membership"), q.Get("not_membership")
	var keep []*rooms.Event
	for _, ev := range evs {
		m := ""
		if ev.Membership != nil {
			m = *ev.Membership
		}
		if (want != "" && m != want) || (notWant != "" && m == notWant) {
			continue
		}
		keep = append(keep, ev)
	}
	chunk, err := a.rooms.Format(r.Context(), keep, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": chunk}, nil
}

// GET /rooms/{roomId}/joined_members: for members of the room (Synapse
// and Complement agree that a user who left gets 403).
func (a *API) joinedMembers(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	// MSC3902: the remote members are known once the resync is done.
	if err := a.rooms.AwaitFullState(r.Context(), roomID); err != nil {
		return nil, err
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		var me *mxhttp.Error
		if errors.As(err, &me) && me.ErrCode == "M_NOT_FOUND" {
			err = mxhttp.Forbidden("You are not in room %s", roomID)
		}
		return nil, err
	}
	memberState, err := a.rooms.CurrentStateOfType(r.Context(), roomID, spec.MRoomMember)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.StateEvents(r.Context(), memberState)
	if err != nil {
		return nil, err
	}
	joined := map[string]any{}
	for _, ev := range evs {
		if ev.Membership == nil || *ev.Membership != spec.Join {
			continue
		}
		var content struct {
			DisplayName *string `json:"displayname"`
			AvatarURL   *string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &content)
		joined[*ev.StateKey] = map[string]*string{"display_name": content.DisplayName, "avatar_url": content.AvatarURL}
	}
	return map[string]any{"joined": joined}, nil
}
