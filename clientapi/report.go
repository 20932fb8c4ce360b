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
func (a *API) reportEvent(r *http.Request, c accounts.Caller) (any, error) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	var body struct {
		Reason *string `json:"reason"`
		Score  *int    `json:"score"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Score != nil && (*body.Score < -100 || *body.Score > 0) {
		return nil, mxhttp.InvalidParam("score must be between -100 and 0")
	}
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, c.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if m != spec.Join {
		return nil, mxhttp.NotFound("Event not found or you are not joined to the room")
	}
	ev, err := a.visibleEvent(r, roomID, eventID, c.UserID)
	if err != nil {
		return nil, err
	}
	if ev.RedactedBy != nil {
		return nil, mxhttp.NotFound("Event not found")
	}
	if err := a.db.InsertReport(r.Context(), storage.ContentReport{
		RoomID: roomID, EventID: &eventID, Reporter: c.UserID, Reason: body.Reason, Score: body.Score,
	}); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// POST /v3/rooms/{roomId}/report: anyone may report a room they know of.
func (a *API) reportRoom(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	reason, err := readReportReason(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("The room was not found")
	} else if err != nil {
		return nil, err
	}
	if err := a.db.InsertReport(r.Context(), storage.ContentReport{RoomID: roomID, Reporter: c.UserID, Reason: reason}); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// POST /v3/users/{userId}/report (v1.14): anyone may report a user,
// whether or not they share a room. A local user must exist (404
// otherwise); a remote user ID is taken as given, since only its server
// could say whether it exists.
func (a *API) reportUser(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	reason, err := readReportReason(r)
	if err != nil {
		return nil, err
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid user ID %q", userID)
	}
	if string(uid.Domain()) == a.conf().ServerName {
		if _, err := a.db.GetUser(r.Context(), userID); errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("The user was not found")
		} else if err != nil {
			return nil, err
		}
	}
	if err := a.db.InsertUserReport(r.Context(), storage.UserReport{UserID: userID, Reporter: c.UserID, Reason: *reason}); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// readReportReason reads the body of a room or user report: a reason,
// required but possibly blank.
func readReportReason(r *http.Request) (*string, error) {
	var body struct {
		Reason *string `json:"reason"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Reason == nil {
		return nil, mxhttp.MissingParam("reason is required (it may be blank)")
	}
	return body.Reason, nil
}
