package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Background tasks of the admin API (admin_tasks, migration 0027):
// redacting a user's events and purging a room's history. A task is
// recorded before the request returns, runs in the background, and is
// resumed after a restart; every step can be done twice (a redacted event
// is not redacted again, a purged event is gone), so a task cut short by
// a crash finishes on the next start without partial work.

const (
	actionRedact = "redact_all_events"
	actionPurge  = "purge_history"
)

// startTask records t and runs it.
func (a *API) startTask(ctx context.Context, t storage.AdminTask) error {
	now := time.Now().UnixMilli()
	t.Status, t.Result, t.CreatedTS, t.UpdatedTS = "scheduled", "{}", now, now
	if err := a.db.InsertAdminTask(ctx, t); err != nil {
		return err
	}
	a.runTaskInBackground(t)
	return nil
}

// ResumeTasks runs every task a previous process left unfinished.
func (a *API) ResumeTasks() {
	ts, err := a.db.AdminTasks(a.ctx, true)
	if err != nil {
		a.log.Error("listing unfinished admin tasks", "err", err)
		return
	}
	for _, t := range ts {
		a.runTaskInBackground(t)
	}
}

func (a *API) runTaskInBackground(t storage.AdminTask) {
	a.background(func(ctx context.Context) { a.runTask(ctx, t) })
}

// runTask does (or finishes) one task. If ctx ends (the server stops) the
// row stays active and the next start resumes it.
func (a *API) runTask(ctx context.Context, t storage.AdminTask) {
	t.Status = "active"
	if err := a.db.UpdateAdminTask(ctx, t); err != nil {
		a.log.Error("admin task", "task", t.ID, "err", err)
		return
	}
	var err error
	switch t.Action {
	case actionRedact:
		err = a.redactWork(ctx, &t)
	case actionPurge:
		err = a.purgeWork(ctx, &t)
	default:
		err = fmt.Errorf("unknown action %q", t.Action)
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		msg := err.Error()
		t.Status, t.Error = "failed", &msg
		a.log.Error("admin task failed", "task", t.ID, "action", t.Action, "err", err)
	} else {
		t.Status = "complete"
	}
	if err := a.db.UpdateAdminTask(context.WithoutCancel(ctx), t); err != nil {
		a.log.Error("admin task", "task", t.ID, "err", err)
	}
}

// redactParams are a redaction task's parameters.
type redactParams struct {
	UserID    string   `json:"user_id"`
	Requester string   `json:"requester"`
	Rooms     []string `json:"rooms"`
	Reason    string   `json:"reason,omitempty"`
	Limit     int      `json:"limit"`
	UseAdmin  bool     `json:"use_admin"`
	BeforeTS  int64    `json:"before_ts,omitempty"`
	AfterTS   int64    `json:"after_ts,omitempty"`
}

// POST /_synapse/admin/v1/user/{userId}/redact {"rooms", "reason",
// "limit", "use_admin"}: redacts the user's messages, encrypted events
// and joins in the rooms (none given: every room they are joined to or
// banned from), at most limit (default 1000) per room. Redactions are the
// user's own (the admin's for a remote user or with use_admin), sent
// through the room core.
func (a *API) redactUser(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, false)
	if err != nil {
		return nil, err
	}
	var req struct {
		Rooms    *[]string `json:"rooms"`
		Reason   string    `json:"reason"`
		Limit    *int      `json:"limit"`
		UseAdmin bool      `json:"use_admin"`
		BeforeTS int64     `json:"before_ts"`
		AfterTS  int64     `json:"after_ts"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Rooms == nil {
		return nil, mxhttp.MissingParam("Missing rooms")
	}
	p := redactParams{UserID: id, Requester: c.UserID, Rooms: *req.Rooms, Reason: req.Reason, Limit: 1000,
		UseAdmin: req.UseAdmin || !a.isLocal(id), BeforeTS: req.BeforeTS, AfterTS: req.AfterTS}
	if req.Limit != nil {
		if *req.Limit <= 0 {
			return nil, mxhttp.InvalidParam("If limit is provided it must be a non-negative integer greater than 0.")
		}
		p.Limit = *req.Limit
	}
	for _, room := range p.Rooms {
		if _, err := spec.NewRoomID(room); err != nil {
			return nil, mxhttp.InvalidParam("%q is not a valid room ID", room)
		}
	}
	if len(p.Rooms) == 0 {
		ms, err := a.db.MembershipsOf(r.Context(), id)
		if err != nil {
			return nil, err
		}
		for room, m := range ms {
			if m == spec.Join || m == spec.Ban {
				p.Rooms = append(p.Rooms, room)
			}
		}
	}
	params, _ := json.Marshal(p)
	t := storage.AdminTask{ID: accounts.NewToken(""), Action: actionRedact, ResourceID: id, Params: string(params)}
	if err := a.startTask(r.Context(), t); err != nil {
		return nil, err
	}
	return map[string]string{"redact_id": t.ID}, nil
}

func (a *API) redactWork(ctx context.Context, t *storage.AdminTask) error {
	var p redactParams
	if err := json.Unmarshal([]byte(t.Params), &p); err != nil {
		return err
	}
	var res struct {
		Failed map[string]string `json:"failed_redactions"`
	}
	_ = json.Unmarshal([]byte(t.Result), &res)
	if res.Failed == nil {
		res.Failed = map[string]string{}
	}
	sender := p.UserID
	if p.UseAdmin {
		sender = p.Requester
	}
	for _, room := range p.Rooms {
		ver, err := a.rooms.Version(ctx, room)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		ids, err := a.db.EventsToRedact(ctx, room, p.UserID, p.Limit, p.BeforeTS, p.AfterTS)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if _, failed := res.Failed[id]; failed {
				continue
			}
			content := map[string]any{}
			if p.Reason != "" {
				content["reason"] = p.Reason
			}
			if rooms.RedactsInContent(ver.Version()) {
				content["redacts"] = id
			}
			raw, _ := json.Marshal(content)
			if _, err := a.rooms.Send(ctx, room, rooms.Proto{Sender: sender, Type: spec.MRoomRedaction, Redacts: id, Content: raw}); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res.Failed[id] = err.Error()
				b, _ := json.Marshal(res)
				t.Result = string(b)
				if err := a.db.UpdateAdminTask(ctx, *t); err != nil {
					return err
				}
			}
		}
	}
	b, _ := json.Marshal(res)
	t.Result = string(b)
	return nil
}

// GET /_synapse/admin/v1/user/redact_status/{redactId}.
func (a *API) redactStatus(r *http.Request, c accounts.Caller) (any, error) {
	t, err := a.db.AdminTaskByID(r.Context(), pathParam(r, "redactId"))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && t.Action != actionRedact) {
		return nil, mxhttp.NotFound("redact id '%s' not found", pathParam(r, "redactId"))
	}
	if err != nil {
		return nil, err
	}
	body := map[string]any{"status": t.Status}
	if t.Status == "complete" || t.Status == "failed" {
		var res map[string]any
		_ = json.Unmarshal([]byte(t.Result), &res)
		f, ok := res["failed_redactions"]
		if !ok {
			f = map[string]any{}
		}
		body["failed_redactions"] = f
	}
	if t.Error != nil {
		body["error"] = *t.Error
	}
	return body, nil
}

// purgeParams are a purge task's parameters: events before (Depth, Pos).
type purgeParams struct {
	RoomID      string `json:"room_id"`
	Depth       int64  `json:"depth"`
	Pos         int64  `json:"stream_pos"`
	DeleteLocal bool   `json:"delete_local_events"`
}

// POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]
// {"delete_local_events", "purge_up_to_event_id" | "purge_up_to_ts"}:
// deletes the room's timeline events before the point (not state events,
// which the room's state is made of, nor forward extremities; local
// users' events only with delete_local_events), in batches each committed
// whole.
func (a *API) purgeHistory(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		DeleteLocal bool            `json:"delete_local_events"`
		UpToEvent   string          `json:"purge_up_to_event_id"`
		UpToTS      json.RawMessage `json:"purge_up_to_ts"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	eventID := pathParam(r, "eventId")
	if eventID == "" {
		eventID = req.UpToEvent
	}
	p := purgeParams{RoomID: s.RoomID, DeleteLocal: req.DeleteLocal}
	switch {
	case eventID != "":
		ev, err := a.rooms.Event(r.Context(), eventID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("Event not found")
		}
		if err != nil {
			return nil, err
		}
		if ev.RoomID != s.RoomID {
			return nil, mxhttp.Unknown("Event is for wrong room.")
		}
		p.Depth, p.Pos = ev.Depth, ev.StreamPos
	case len(req.UpToTS) > 0:
		ts, err := strconv.ParseInt(string(req.UpToTS), 10, 64)
		if err != nil {
			return nil, mxhttp.BadJSON("purge_up_to_ts must be an int")
		}
		ev, err := a.rooms.EventNearTimestamp(r.Context(), s.RoomID, ts, false, func(*rooms.Event) (bool, error) { return true, nil })
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("there is no event to be purged")
		}
		if err != nil {
			return nil, err
		}
		// The point is just after the last event before ts.
		p.Depth, p.Pos = ev.Depth, ev.StreamPos+1
	default:
		return nil, mxhttp.BadJSON("must specify purge_up_to_event_id or purge_up_to_ts")
	}
	params, _ := json.Marshal(p)
	t := storage.AdminTask{ID: accounts.NewToken(""), Action: actionPurge, ResourceID: s.RoomID, Params: string(params)}
	if err := a.startTask(r.Context(), t); err != nil {
		return nil, err
	}
	return map[string]string{"purge_id": t.ID}, nil
}

func (a *API) purgeWork(ctx context.Context, t *storage.AdminTask) error {
	var p purgeParams
	if err := json.Unmarshal([]byte(t.Params), &p); err != nil {
		return err
	}
	purged := 0
	for {
		room, err := storage.GetRoom(ctx, a.db.Read(), p.RoomID)
		if err != nil {
			return err
		}
		ids, err := a.db.PurgeableEvents(ctx, p.RoomID, p.Depth, p.Pos, room.Extremities, a.cfg.ServerName, p.DeleteLocal, 500)
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			break
		}
		if err := a.db.PurgeEvents(ctx, ids); err != nil {
			return err
		}
		a.rooms.ForgetEvents(ids...)
		purged += len(ids)
	}
	t.Result = fmt.Sprintf(`{"purged_events": %d}`, purged)
	return nil
}

// GET /_synapse/admin/v1/purge_history_status/{purgeId}: active (also
// while scheduled), complete or failed.
func (a *API) purgeStatus(r *http.Request, c accounts.Caller) (any, error) {
	t, err := a.db.AdminTaskByID(r.Context(), pathParam(r, "purgeId"))
	if errors.Is(err, storage.ErrNotFound) || (err == nil && t.Action != actionPurge) {
		return nil, mxhttp.NotFound("purge id '%s' not found", pathParam(r, "purgeId"))
	}
	if err != nil {
		return nil, err
	}
	status := t.Status
	if status != "complete" && status != "failed" {
		status = "active"
	}
	body := map[string]any{"status": status}
	if t.Error != nil {
		body["error"] = *t.Error
	}
	return body, nil
}

// GET /_synapse/admin/v1/scheduled_tasks?action_name=&resource_id=&status=&max_timestamp=:
// the admin API's background work, room deletions included
// (shutdown_and_purge_room).
func (a *API) scheduledTasks(r *http.Request, c accounts.Caller) (any, error) {
	q := r.URL.Query()
	status := q.Get("status")
	if status == "" {
		status = q.Get("job_status")
	}
	switch status {
	case "", "scheduled", "active", "complete", "failed", "cancelled":
	default:
		return nil, mxhttp.InvalidParam("Unknown status %q", status)
	}
	maxTS, err := int64Param(r, "max_timestamp", 0)
	if err != nil {
		return nil, err
	}
	var list []map[string]any
	add := func(id, action, st string, ts int64, resource string, result any, errText *string) {
		if (q.Get("action_name") != "" && action != q.Get("action_name")) || (q.Get("resource_id") != "" && resource != q.Get("resource_id")) ||
			(status != "" && st != status) || (maxTS != 0 && ts > maxTS) {
			return
		}
		list = append(list, map[string]any{"id": id, "action": action, "status": st, "timestamp_ms": ts,
			"resource_id": resource, "result": result, "error": errText})
	}
	tasks, err := a.db.AdminTasks(r.Context(), false)
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		add(t.ID, t.Action, t.Status, t.UpdatedTS, t.ResourceID, json.RawMessage(t.Result), t.Error)
	}
	ds, err := a.db.AllRoomDeletions(r.Context())
	if err != nil {
		return nil, err
	}
	for _, d := range ds {
		add(d.DeleteID, "shutdown_and_purge_room", d.Status, d.CreatedTS, d.RoomID, deletionJSON(d)["shutdown_room"], d.Error)
	}
	if list == nil {
		list = []map[string]any{}
	}
	return map[string]any{"scheduled_tasks": list}, nil
}
