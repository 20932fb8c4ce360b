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
func (a *API) createRoom(r *http.Request, c accounts.Caller) (any, error) {
	var req createRoomRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
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
		return nil, mxhttp.InvalidParam("visibility must be public or private")
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
		return nil, mxhttp.InvalidParam("Unknown preset %q", req.Preset)
	}
	for _, u := range req.Invite {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, mxhttp.InvalidParam("Invalid user ID to invite: %q", u)
		}
		if u == c.UserID {
			return nil, mxhttp.InvalidParam("You cannot invite yourself")
		}
	}
	cr.Invite = req.Invite
	for _, s := range req.InitialState {
		if s.Type == "" {
			return nil, mxhttp.BadJSON("initial_state events need a type")
		}
	}
	if req.RoomAliasName != "" {
		if strings.ContainsAny(req.RoomAliasName, ": \t\n#") {
			return nil, mxhttp.InvalidParam("room_alias_name must be the local part only, without ':', '#' or whitespace")
		}
		cr.Alias = "#" + req.RoomAliasName + ":" + a.conf().ServerName
		if len(cr.Alias) > 255 {
			return nil, mxhttp.InvalidParam("The room alias is longer than 255 bytes")
		}
		if err := a.checkAliasNamespace(c, cr.Alias); err != nil {
			return nil, err
		}
	}
	roomID, err := a.rooms.Create(r.Context(), cr)
	if err != nil {
		return nil, err
	}
	// A room created by hand as another room's successor (creation_content
	// with a predecessor) carries the creator's push rules over too.
	a.copyPushRulesOnJoin(r.Context(), c.UserID, roomID)
	return map[string]string{"room_id": roomID}, nil
}

// GET /_matrix/client/v3/joined_rooms
func (a *API) joinedRooms(r *http.Request, c accounts.Caller) (any, error) {
	ids, err := a.rooms.JoinedRooms(r.Context(), c.UserID)
	if err != nil {
		return nil, err
	}
	if ids == nil {
		ids = []string{}
	}
	return map[string]any{"joined_rooms": ids}, nil
}
