package clientapi

import (
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Room upgrades (client-server API, Room upgrades): the work is
// rooms.Upgrade, one transaction.

// POST /v3/rooms/{roomId}/upgrade
func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	var body struct {
		NewVersion         *string  `json:"new_version"`
		AdditionalCreators []string `json:"additional_creators"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.NewVersion == nil || *body.NewVersion == "" {
		mxhttp.WriteError(w, r, mxhttp.BadJSON("new_version is required"))
		return
	}
	if len(body.AdditionalCreators) > 0 {
		// Only room versions with privileged creators (12+) take them, and
		// Hearth does not serve those yet.
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("additional_creators needs a room version with privileged creators"))
		return
	}
	newRoomID, err := a.rooms.Upgrade(r.Context(), roomID, c.UserID, gomatrixserverlib.RoomVersion(*body.NewVersion))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoomID})
}
