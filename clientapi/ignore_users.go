package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/rooms"
)

// Ignoring users (client-server API, Ignoring Users): events from the users
// in the caller's m.ignored_user_list are left out wherever the server hands
// out a room's events, except state events, which servers must still send.
// Invites from ignored users are left out of sync.

// withoutIgnored drops the non-state events of evs sent by users userID
// ignores.
func (a *API) withoutIgnored(r *http.Request, userID string, evs []*rooms.Event) []*rooms.Event {
	ignored := a.ignoredUsers(r.Context(), userID)
	if len(ignored) == 0 {
		return evs
	}
	out := make([]*rooms.Event, 0, len(evs))
	for _, ev := range evs {
		if ev.IsState() || !ignored[ev.Sender] {
			out = append(out, ev)
		}
	}
	return out
}
