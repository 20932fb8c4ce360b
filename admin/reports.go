package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Event reports (Synapse's docs/admin_api/event_reports.md): the reports
// users made with POST /rooms/{roomId}/report/{eventId}.

func (a *API) reportJSON(r *http.Request, rep storage.EventReport) (map[string]any, error) {
	out := map[string]any{"id": rep.ID, "received_ts": rep.ReceivedTS, "room_id": rep.RoomID, "event_id": rep.EventID,
		"user_id": rep.UserID, "reason": rep.Reason, "score": rep.Score, "name": nil, "canonical_alias": nil, "sender": nil}
	if s, err := a.summarise(r.Context(), rep.RoomID); err == nil {
		out["name"], out["canonical_alias"] = s.Name, s.CanonicalAlias
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if ev, err := a.rooms.Event(r.Context(), rep.EventID); err == nil {
		out["sender"] = ev.Sender
	}
	return out, nil
}

// GET /_synapse/admin/v1/event_reports: newest first unless dir=f;
// room_id and user_id filter on the room and the reporter.
func (a *API) listEventReports(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r, "b")
	if err != nil {
		return nil, err
	}
	q := storage.ReportQuery{RoomID: r.URL.Query().Get("room_id"), UserID: r.URL.Query().Get("user_id"),
		Backwards: backwards, From: from, Limit: limit}
	reps, total, err := a.db.ListEventReports(r.Context(), q)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(reps))
	for _, rep := range reps {
		j, err := a.reportJSON(r, rep)
		if err != nil {
			return nil, err
		}
		list = append(list, j)
	}
	body := map[string]any{"event_reports": list, "total": total}
	nextToken(body, from, len(reps), total, false)
	return body, nil
}

// reportID is the {reportId} of an event or user report: a non-negative
// integer, else 400 M_INVALID_PARAM with Synapse's message.
func reportID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(pathParam(r, "reportId"), 10, 64)
	if err != nil || id < 0 {
		return 0, mxhttp.InvalidParam("The report_id parameter must be a string representing a positive integer.")
	}
	return id, nil
}

// reportParam is the {reportId}: a non-negative integer (400
// M_INVALID_PARAM) of a stored event report (404 M_NOT_FOUND).
func (a *API) reportParam(r *http.Request) (storage.EventReport, error) {
	id, err := reportID(r)
	if err != nil {
		return storage.EventReport{}, err
	}
	rep, err := a.db.GetEventReport(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return rep, mxhttp.NotFound("Event report not found")
	}
	return rep, err
}

// GET /_synapse/admin/v1/event_reports/{reportId}: with the event.
func (a *API) getEventReport(r *http.Request, c accounts.Caller) (any, error) {
	rep, err := a.reportParam(r)
	if err != nil {
		return nil, err
	}
	out, err := a.reportJSON(r, rep)
	if err != nil {
		return nil, err
	}
	out["event_json"] = nil
	if ev, err := a.rooms.Event(r.Context(), rep.EventID); err == nil {
		out["event_json"] = json.RawMessage(ev.PDU.JSON())
	}
	return out, nil
}

// DELETE /_synapse/admin/v1/event_reports/{reportId}.
func (a *API) deleteEventReport(r *http.Request, c accounts.Caller) (any, error) {
	rep, err := a.reportParam(r)
	if err != nil {
		return nil, err
	}
	if err := a.db.DeleteEventReport(r.Context(), rep.ID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// User reports (Synapse's docs/admin_api/user_reports.md): the reports
// users made with POST /users/{userId}/report.

func userReportJSON(rep storage.UserReportRow) map[string]any {
	return map[string]any{"id": rep.ID, "received_ts": rep.ReceivedTS, "target_user_id": rep.UserID,
		"user_id": rep.Reporter, "reason": rep.Reason}
}

// GET /_synapse/admin/v1/user_reports: newest first unless dir=f;
// user_id filters on the reporter, target_user_id on the reported user.
func (a *API) listUserReports(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r, "b")
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	reps, total, err := a.db.ListUserReports(r.Context(), q.Get("target_user_id"), q.Get("user_id"), backwards, from, limit)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(reps))
	for _, rep := range reps {
		list = append(list, userReportJSON(rep))
	}
	body := map[string]any{"user_reports": list, "total": total}
	nextToken(body, from, len(reps), total, false)
	return body, nil
}

func (a *API) userReportParam(r *http.Request) (storage.UserReportRow, error) {
	id, err := reportID(r)
	if err != nil {
		return storage.UserReportRow{}, err
	}
	rep, err := a.db.GetUserReport(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return rep, mxhttp.NotFound("User report not found")
	}
	return rep, err
}

// GET /_synapse/admin/v1/user_reports/{reportId}.
func (a *API) getUserReport(r *http.Request, c accounts.Caller) (any, error) {
	rep, err := a.userReportParam(r)
	if err != nil {
		return nil, err
	}
	return userReportJSON(rep), nil
}

// DELETE /_synapse/admin/v1/user_reports/{reportId}.
func (a *API) deleteUserReport(r *http.Request, c accounts.Caller) (any, error) {
	rep, err := a.userReportParam(r)
	if err != nil {
		return nil, err
	}
	if err := a.db.DeleteUserReport(r.Context(), rep.ID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
