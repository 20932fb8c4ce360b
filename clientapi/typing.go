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
func (a *API) putTyping(r *http.Request, c accounts.Caller) (any, error) {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	var body struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Typing == nil {
		return nil, mxhttp.MissingParam("typing is required")
	}
	if userID != c.UserID {
		return nil, mxhttp.Forbidden("You can only set your own typing state")
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	timeout := 30 * time.Second
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, mxhttp.InvalidParam("timeout must not be negative")
		}
		timeout = min(time.Duration(*body.Timeout)*time.Millisecond, maxTypingTimeout)
	}
	a.typing.Set(roomID, c.UserID, *body.Typing, timeout)
	if a.fed != nil {
		a.fed.SendTyping(r.Context(), roomID, c.UserID, *body.Typing)
	}
	return struct{}{}, nil
}
