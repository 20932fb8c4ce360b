package clientapi

import (
	"context"
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
// it only publicly previewable rooms are summarised. Rooms this server does
// not have are 404 until federation can ask the via servers.
func (a *API) getRoomSummary(r *http.Request, _ accounts.Caller) (any, error) {
	c, err := a.optionalCaller(r)
	if err != nil {
		return nil, err
	}
	roomID, _, err := a.resolveRoom(r, pathParam(r, "roomIdOrAlias"))
	if err != nil {
		return nil, err
	}
	info, err := a.rooms.Info(r.Context(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room not found")
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
