package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Room summaries (client-server API, GET /v1/room_summary/{roomIdOrAlias},
// v1.15) and the access rule they share with the space hierarchy.

// roomAccessible applies the spec's rule for which rooms a user may learn
// about (space hierarchy, room summary): a member (joined or invited), a
// public, knockable or world_readable room, or a restricted room whose
// allowed rooms the user is joined to. It also returns the user's
// membership.
func (a *API) roomAccessible(ctx context.Context, info rooms.Info, userID string) (bool, string, error) {
	membership := ""
	if userID != "" {
		m, _, err := a.rooms.MembershipOf(ctx, info.RoomID, userID)
		if err != nil {
			return false, "", err
		}
		membership = m
	}
	switch {
	case membership == spec.Ban:
		return false, membership, nil
	case membership == spec.Join || membership == spec.Invite || membership == spec.Knock:
		return true, membership, nil
	case rooms.PubliclyPreviewable(info):
		return true, membership, nil
	case userID != "" && (info.JoinRule == "restricted" || info.JoinRule == "knock_restricted"):
		ok, err := a.joinedToAny(ctx, userID, info.AllowedRoomIDs)
		return ok, membership, err
	}
	return false, membership, nil
}

// remoteRoomAccessible applies roomAccessible to a room only another
// server has (its summary from federation): the user has no membership we
// know of, so the room must be publicly previewable, or restricted to
// rooms the user is joined to.
func (a *API) remoteRoomAccessible(ctx context.Context, s rooms.Summary, userID string) (bool, error) {
	if rooms.PubliclyPreviewable(s.Info) {
		return true, nil
	}
	if userID != "" && (s.JoinRule == "restricted" || s.JoinRule == "knock_restricted") {
		return a.joinedToAny(ctx, userID, s.AllowedRoomIDs)
	}
	return false, nil
}

// joinedToAny reports whether the user is joined to one of the rooms.
func (a *API) joinedToAny(ctx context.Context, userID string, roomIDs []string) (bool, error) {
	for _, id := range roomIDs {
		m, _, err := a.rooms.MembershipOf(ctx, id, userID)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return false, err
		}
		if m == spec.Join {
			return true, nil
		}
	}
	return false, nil
}

// GET /v1/room_summary/{roomIdOrAlias}: authentication is optional; without
// it only publicly previewable rooms are summarised. A room this server is
// not in is asked of the via servers (or those the alias names) over
// federation, with the federation hierarchy endpoint the room summary
// MSC (MSC3266) names; unauthenticated callers are limited per address,
// as the spec suggests for requests that need federation.
func (a *API) getRoomSummary(r *http.Request, _ accounts.Caller) (any, error) {
	c, err := a.optionalCaller(r)
	if err != nil {
		return nil, err
	}
	roomID, via, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	info, err := a.rooms.Info(r.Context(), roomID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && info.RoomVersion == "" {
		return a.remoteRoomSummary(r, c, roomID, via)
	}
	if err != nil {
		return nil, err
	}
	ok, membership, err := a.roomAccessible(r.Context(), info, c.UserID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.NotFound("Room not found")
	}
	s := rooms.SummaryOf(info)
	if c.UserID != "" {
		s.Membership = membership
		if s.Membership == "" {
			s.Membership = spec.Leave
		}
	}
	return s, nil
}

// remoteRoomSummary asks via for the summary of a room no local user is
// in (GET /_matrix/federation/v1/hierarchy/{roomId}: its room entry is
// the summary). The room must be publicly previewable, restricted to a
// room the user is joined to, or one the user is invited to or knocked on
// here; anything else is 404, like a room nobody knows.
func (a *API) remoteRoomSummary(r *http.Request, c accounts.Caller, roomID string, via []string) (any, error) {
	if a.fed == nil || len(via) == 0 {
		return nil, mxhttp.NotFound("Room not found")
	}
	if c.UserID == "" {
		if err := a.limit(r, a.live().limits.loginIP, "room_summary:"+clientIP(r)); err != nil {
			return nil, err
		}
	}
	membership := ""
	if c.UserID != "" {
		var err error
		if membership, _, err = a.rooms.MembershipOf(r.Context(), roomID, c.UserID); err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	h, err := a.fed.Hierarchy(r.Context(), roomID, via, false)
	if err != nil {
		mxhttp.Logger(r).Info("room summary: no via server answered", "room_id", roomID, "err", err)
		if membership == spec.Invite {
			// The spec warns that invitees may get partial data: what
			// the invite's stripped state says.
			return a.invitedRoomSummary(r, roomID, c.UserID)
		}
		return nil, mxhttp.NotFound("Room not found")
	}
	ok := membership == spec.Invite || membership == spec.Knock
	if !ok && membership != spec.Ban {
		if ok, err = a.remoteRoomAccessible(r.Context(), h.Room.Summary, c.UserID); err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, mxhttp.NotFound("Room not found")
	}
	s := h.Room.Summary
	s.Membership = ""
	if c.UserID != "" {
		s.Membership = membership
		if s.Membership == "" {
			s.Membership = spec.Leave
		}
	}
	return s, nil
}

// invitedRoomSummary is the summary an invite's stripped state gives, for
// a room whose servers do not summarise it for us (an invite-only room
// answers no other server's hierarchy request). The member count is not
// in it: 0.
func (a *API) invitedRoomSummary(r *http.Request, roomID, userID string) (any, error) {
	stripped, err := a.rooms.RemoteInviteState(r.Context(), roomID, userID)
	if err != nil {
		return nil, err
	}
	if len(stripped) == 0 {
		return nil, mxhttp.NotFound("Room not found")
	}
	s := rooms.Summary{Info: rooms.Info{RoomID: roomID}, Membership: spec.Invite}
	for _, raw := range stripped {
		var ev struct {
			Type     string `json:"type"`
			StateKey string `json:"state_key"`
			Content  struct {
				Name              string `json:"name"`
				Topic             string `json:"topic"`
				URL               string `json:"url"`
				Alias             string `json:"alias"`
				JoinRule          string `json:"join_rule"`
				Algorithm         string `json:"algorithm"`
				Type              string `json:"type"`
				RoomVersion       string `json:"room_version"`
				HistoryVisibility string `json:"history_visibility"`
				GuestAccess       string `json:"guest_access"`
			} `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.StateKey != "" {
			continue
		}
		switch c := ev.Content; ev.Type {
		case spec.MRoomName:
			s.Name = c.Name
		case spec.MRoomTopic:
			s.Topic = c.Topic
		case "m.room.avatar":
			s.AvatarURL = c.URL
		case spec.MRoomCanonicalAlias:
			s.CanonicalAlias = c.Alias
		case spec.MRoomJoinRules:
			s.JoinRule = c.JoinRule
		case "m.room.encryption":
			s.Encryption = c.Algorithm
		case spec.MRoomCreate:
			s.RoomType, s.RoomVersion = c.Type, c.RoomVersion
			if s.RoomVersion == "" {
				s.RoomVersion = "1" // the create event's default
			}
		case spec.MRoomHistoryVisibility:
			s.WorldReadable = c.HistoryVisibility == "world_readable"
		case spec.MRoomGuestAccess:
			s.GuestCanJoin = c.GuestAccess == "can_join"
		}
	}
	return s, nil
}
