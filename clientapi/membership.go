package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

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
}

// readMembershipBody reads the optional JSON body of a membership request;
// an empty body is allowed where the spec makes every field optional.
func readMembershipBody(r *http.Request, needUser bool) (membershipBody, error) {
	var b membershipBody
	if r.ContentLength != 0 {
		if err := mxhttp.ReadJSON(r, &b); err != nil {
			var me *mxhttp.Error
			if !(errors.As(err, &me) && me.Message == "Request body is empty; expected a JSON object") {
				return b, err
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

func (a *API) changeMembership(w http.ResponseWriter, r *http.Request, roomID string, c rooms.ChangeMembership) {
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Unknown room %s", roomID))
		return
	}
	if c.Membership == spec.Join && c.Sender == c.Target {
		extra, err := a.joinAuthorisation(r, roomID, c.Sender)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		c.Extra = extra
	}
	if _, err := a.rooms.SetMembership(r.Context(), roomID, c); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if c.Membership == spec.Join || c.Membership == spec.Knock {
		mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

// POST /rooms/{roomId}/join
func (a *API) joinRoomByID(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.changeMembership(w, r, pathParam(r, "roomId"), rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Join, Reason: b.Reason})
}

// resolveRoom turns a room ID or alias into a room ID.
func (a *API) resolveRoom(r *http.Request, idOrAlias string) (string, error) {
	switch {
	case strings.HasPrefix(idOrAlias, "!"):
		return idOrAlias, nil
	case strings.HasPrefix(idOrAlias, "#"):
		roomID, _, err := storage.ResolveAlias(r.Context(), a.db.Read(), idOrAlias)
		if errors.Is(err, storage.ErrNotFound) {
			return "", mxhttp.NotFound("Room alias %s not found", idOrAlias)
		}
		return roomID, err
	default:
		return "", mxhttp.InvalidParam("%q is neither a room ID nor a room alias", idOrAlias)
	}
}

// POST /join/{roomIdOrAlias}
func (a *API) joinRoomByIDOrAlias(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.changeMembership(w, r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Join, Reason: b.Reason})
}

// POST /knock/{roomIdOrAlias}
func (a *API) knock(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.changeMembership(w, r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Knock, Reason: b.Reason})
}

// POST /rooms/{roomId}/invite
func (a *API) invite(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, true)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID := pathParam(r, "roomId")
	if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, b.UserID); err == nil && (m == spec.Join || m == spec.Ban) {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("%s is already %s in the room", b.UserID, map[string]string{spec.Join: "joined", spec.Ban: "banned"}[m]))
		return
	}
	a.changeMembership(w, r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: b.UserID, Membership: spec.Invite, Reason: b.Reason})
}

// POST /rooms/{roomId}/leave
func (a *API) leave(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, false)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.changeMembership(w, r, pathParam(r, "roomId"), rooms.ChangeMembership{Sender: c.UserID, Target: c.UserID, Membership: spec.Leave, Reason: b.Reason})
}

// POST /rooms/{roomId}/kick
func (a *API) kick(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, true)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID := pathParam(r, "roomId")
	if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, b.UserID); err == nil && m != spec.Join && m != spec.Invite && m != spec.Knock {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("%s is not in the room", b.UserID))
		return
	}
	a.changeMembership(w, r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: b.UserID, Membership: spec.Leave, Reason: b.Reason})
}

// POST /rooms/{roomId}/ban
func (a *API) ban(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, true)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.changeMembership(w, r, pathParam(r, "roomId"), rooms.ChangeMembership{Sender: c.UserID, Target: b.UserID, Membership: spec.Ban, Reason: b.Reason})
}

// POST /rooms/{roomId}/unban
func (a *API) unban(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	b, err := readMembershipBody(r, true)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID := pathParam(r, "roomId")
	if m, _, err := a.rooms.MembershipOf(r.Context(), roomID, b.UserID); err == nil && m != spec.Ban {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("%s is not banned", b.UserID))
		return
	}
	a.changeMembership(w, r, roomID, rooms.ChangeMembership{Sender: c.UserID, Target: b.UserID, Membership: spec.Leave, Reason: b.Reason})
}

// POST /rooms/{roomId}/forget
func (a *API) forget(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Unknown room %s", roomID))
		return
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if m == spec.Join || m == spec.Invite || m == spec.Knock {
		mxhttp.WriteError(w, r, mxhttp.Unknown("You must leave the room before forgetting it"))
		return
	}
	if m == "" {
		mxhttp.WriteError(w, r, mxhttp.NotFound("You were never in %s", roomID))
		return
	}
	if err := a.db.ForgetRoom(r.Context(), c.UserID, roomID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

// GET /rooms/{roomId}/members
func (a *API) members(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	st, err := a.visibleState(r, roomID, c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if at := r.URL.Query().Get("at"); at != "" {
		if st, err = a.stateAtToken(r, roomID, at, st); err != nil {
			mxhttp.WriteError(w, r, err)
			return
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
		mxhttp.WriteError(w, r, err)
		return
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
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"chunk": chunk})
}

// GET /rooms/{roomId}/joined_members
func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	st, err := a.visibleState(r, roomID, c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	memberState := rooms.State{}
	for k, id := range st {
		if k.Type == spec.MRoomMember {
			memberState[k] = id
		}
	}
	evs, err := a.rooms.StateEvents(r.Context(), memberState)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
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
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"joined": joined})
}
