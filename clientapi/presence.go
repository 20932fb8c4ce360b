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
func (a *API) putPresence(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	var body struct {
		Presence  string  `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if userID != c.UserID {
		return nil, mxhttp.Forbidden("You can only set your own presence")
	}
	switch body.Presence {
	case "online", "offline", "unavailable":
	default:
		return nil, mxhttp.InvalidParam("presence must be online, offline or unavailable")
	}
	if !a.conf().Presence {
		return struct{}{}, nil
	}
	a.presence.Set(c.UserID, body.Presence, body.StatusMsg, body.Presence == "online")
	return struct{}{}, nil
}

// GET /presence/{userId}/status
func (a *API) getPresence(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	if _, err := a.db.GetUser(r.Context(), userID); err != nil {
		return nil, mxhttp.NotFound("Unknown user %s", userID)
	}
	return presenceContent(a.presence.Get(userID), false), nil
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
