package clientapi

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
)

// Room creation (client-server API, Creation).

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	Invite3PID                []json.RawMessage          `json:"invite_3pid"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []rooms.StateEvent         `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

// POST /_matrix/client/v3/createRoom
func (a *API) createRoom(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req createRoomRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	cr := rooms.CreateRequest{
		Creator: c.UserID, Version: gomatrixserverlib.RoomVersion(req.RoomVersion),
		Name: req.Name, Topic: req.Topic, IsDirect: req.IsDirect,
		CreationContent: req.CreationContent, InitialState: req.InitialState,
		PowerLevelContentOverride: req.PowerLevelContentOverride,
		Public:                    req.Visibility == "public",
	}
	switch req.Visibility {
	case "", "private", "public":
	default:
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("visibility must be public or private"))
		return
	}
	cr.Preset = req.Preset
	switch req.Preset {
	case "":
		cr.Preset = "private_chat"
		if cr.Public {
			cr.Preset = "public_chat"
		}
	case "private_chat", "trusted_private_chat", "public_chat":
	default:
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("Unknown preset %q", req.Preset))
		return
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("Invalid user ID to invite: %q", u))
			return
		}
		if u == c.UserID {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("You cannot invite yourself"))
			return
		}
	}
	cr.Invite = req.Invite
	for _, s := range req.InitialState {
		if s.Type == "" {
			mxhttp.WriteError(w, r, mxhttp.BadJSON("initial_state events need a type"))
			return
		}
	}
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ": \t\n#") {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("room_alias_name must be the local part only, without ':', '#' or whitespace"))
			return
		}
		cr.Alias = "#" + req.RoomAliasName + ":" + a.cfg.ServerName
		if len(cr.Alias) > 255 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("The room alias is longer than 255 bytes"))
			return
		}
		if err := a.checkAliasNamespace(c, cr.Alias); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
	}
	roomID, err := a.rooms.Create(r.Context(), cr)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	// A room created by hand as another room's successor (creation_content
	// with a predecessor) carries the creator's push rules over too.
	a.copyPushRulesOnJoin(r.Context(), c.UserID, roomID)
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

// GET /_matrix/client/v3/joined_rooms
func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	ids, err := a.rooms.JoinedRooms(r.Context(), c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if ids == nil {
		ids = []string{}
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"joined_rooms": ids})
}
