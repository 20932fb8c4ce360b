package clientapi

import (
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Typing notifications (client-server API, Typing Notifications).

// maxTypingTimeout bounds how long one request may mark a user typing.
const maxTypingTimeout = 2 * time.Minute

// PUT /rooms/{roomId}/typing/{userId}
func (a *API) putTyping(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Typing == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("typing is required"))
		return
	}
	if userID != c.UserID {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("You can only set your own typing state"))
		return
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	timeout := 30 * time.Second
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("timeout must not be negative"))
			return
		}
		timeout = min(time.Duration(*body.Timeout)*time.Millisecond, maxTypingTimeout)
	}
	a.typing.Set(roomID, c.UserID, *body.Typing, timeout)
	if a.fed != nil {
		a.fed.SendTyping(r.Context(), roomID, c.UserID, *body.Typing)
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}
