package clientapi

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Reporting content (client-server API, Reporting content): reports are
// stored in content_reports for server admins.

// POST /v3/rooms/{roomId}/report/{eventId}: the reporter must be joined;
// unknown, invisible and redacted events are 404. score was removed in
// v1.18; when a client still sends it, it must be in [-100, 0].
func (a *API) reportEvent(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	var body struct {
		Reason *string `json:"reason"`
		Score  *int    `json:"score"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Score != nil && (*body.Score < -100 || *body.Score > 0) {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("score must be between -100 and 0"))
		return
	}
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, err)
		return
	}
	if m != spec.Join {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Event not found or you are not joined to the room"))
		return
	}
	ev, err := a.visibleEvent(r, roomID, eventID, c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if ev.RedactedBy != nil {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Event not found"))
		return
	}
	if err := a.db.InsertReport(r.Context(), storage.ContentReport{
		RoomID: roomID, EventID: &eventID, Reporter: c.UserID, Reason: body.Reason, Score: body.Score,
	}); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

// POST /v3/rooms/{roomId}/report: anyone may report a room they know of.
func (a *API) reportRoom(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Reason == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("reason is required (it may be blank)"))
		return
	}
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("The room was not found"))
		return
	} else if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.db.InsertReport(r.Context(), storage.ContentReport{RoomID: roomID, Reporter: c.UserID, Reason: body.Reason}); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}
