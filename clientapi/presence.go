package clientapi

import (
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Presence (client-server API, Presence).

// PUT /presence/{userId}/status
func (a *API) putPresence(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	userID := pathParam(r, "userId")
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if userID != c.UserID {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("You can only set your own presence"))
		return
	}
	switch body.Presence {
	case "online", "offline", "unavailable":
	default:
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("presence must be online, offline or unavailable"))
		return
	}
	if !a.cfg.Presence {
		mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
		return
	}
	a.presence.Set(c.UserID, body.Presence, body.StatusMsg, body.Presence == "online")
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// GET /presence/{userId}/status
func (a *API) getPresence(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	userID := pathParam(r, "userId")
	if _, err := a.db.GetUser(r.Context(), userID); err != nil {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Unknown user %s", userID))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, presenceContent(a.presence.Get(userID), false))
}

// presenceContent is the m.presence content (or GET body) of a state.
func presenceContent(st syncstream.PresenceState, withUser bool) map[string]any {
	out := map[string]any{"presence": st.Presence}
	if !st.LastActive.IsZero() {
		out["last_active_ago"] = time.Since(st.LastActive).Milliseconds()
	}
	if st.StatusMsg != nil {
		out["status_msg"] = *st.StatusMsg
	}
	if st.Presence == "online" {
		out["currently_active"] = st.CurrentlyActive
	}
	return out
}
