package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rtc"
	"github.com/hearth-matrix/hearth/storage"
)

// Delayed events (MSC4140, unstable prefix org.matrix.msc4140), as
// Complement's tests/msc4140 exercise them:
//
//   - PUT /v3/rooms/{roomId}/send/{type}/{txnId}?org.matrix.msc4140.delay=MS
//     and PUT /v3/rooms/{roomId}/state/{type}/{stateKey}?org.matrix.msc4140.delay=MS
//     schedule the event and answer {"delay_id": ...} (sendMessage, putState);
//   - POST .../delayed_events/{delayId}/{send|cancel|restart} manage it, with
//     or without an access token (the delay_id is the credential; with a
//     token, another user's delay_id is 404);
//   - GET .../delayed_events lists the caller's scheduled delayed events
//     (?status=finalised: the finalised ones), and
//     GET .../delayed_events/{delayId} shows one, scheduled or finalised.
//
// The scheduler and its store live in package rtc.

const msc4140 = "/_matrix/client/unstable/org.matrix.msc4140"

// scheduleDelayed answers a send or state PUT carrying a delay: checks
// what can be checked now (the room exists and the sender is joined;
// power levels are checked when the event is sent, as MSC4140 says) and
// stores the event for later.
func (a *API) scheduleDelayed(r *http.Request, c accounts.Caller, req rtc.Request) (any, error) {
	if err := a.requireJoined(r, req.RoomID, c.UserID); err != nil {
		return nil, err
	}
	id, err := a.delayed.Schedule(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return map[string]string{"delay_id": id}, nil
}

// delayedTxn names a send endpoint's transaction for delayed events.
func delayedTxn(roomID, evType, txnID string) string {
	return "send:" + roomID + ":" + evType + ":" + txnID
}

// POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}
func (a *API) delayedEventAction(r *http.Request, _ accounts.Caller) (any, error) {
	c, err := a.optionalCaller(r)
	if err != nil {
		return nil, err
	}
	action := pathParam(r, "action")
	switch action {
	case rtc.ActionSend, rtc.ActionCancel, rtc.ActionRestart:
	default:
		return nil, mxhttp.Unrecognized("Unknown delayed event action %q", action)
	}
	if !a.delayed.Enabled() {
		return nil, mxhttp.NotFound("No delayed event with that delay_id")
	}
	// The body is an empty object; nothing in it is read.
	if err := a.delayed.Act(r.Context(), pathParam(r, "delayId"), c.UserID, action); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events
func (a *API) listDelayedEvents(r *http.Request, c accounts.Caller) (any, error) {
	finalised := false
	switch s := r.URL.Query().Get("status"); s {
	case "", "scheduled":
	case "finalised":
		finalised = true
	default:
		return nil, mxhttp.InvalidParam("status must be scheduled or finalised")
	}
	rows, err := a.delayed.List(r.Context(), c.UserID, finalised)
	if err != nil {
		return nil, err
	}
	out := make([]map[string]any, 0, len(rows))
	for _, row := range rows {
		out = append(out, delayedEventJSON(row))
	}
	return map[string]any{"delayed_events": out}, nil
}

// GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}
func (a *API) getDelayedEvent(r *http.Request, c accounts.Caller) (any, error) {
	row, err := a.delayed.Get(r.Context(), pathParam(r, "delayId"), c.UserID)
	if err != nil {
		return nil, err
	}
	return delayedEventJSON(row), nil
}

// delayedEventJSON is MSC4140's description of a delayed event: delay_id,
// room_id, type, state_key (state events), delay_ms, scheduled_at and
// content, plus, once finalised, finalised_ts and event_id (sent) or error
// (failed, or cancelled by another user's state). delay and running_since
// repeat delay_ms and scheduled_at under the names of earlier revisions
// of the MSC, which Synapse and current clients use.
func delayedEventJSON(row storage.DelayedEvent) map[string]any {
	m := map[string]any{
		"delay_id": row.DelayID, "room_id": row.RoomID, "type": row.Type,
		"delay_ms": row.DelayMS, "delay": row.DelayMS,
		"scheduled_at": row.ScheduledAt, "running_since": row.ScheduledAt,
		"content": json.RawMessage(row.Content),
	}
	if row.StateKey != nil {
		m["state_key"] = *row.StateKey
	}
	if row.FinalisedTS != nil {
		m["finalised_ts"] = *row.FinalisedTS
		if row.EventID != nil {
			m["event_id"] = *row.EventID
		}
		if row.Error != nil {
			m["error"] = json.RawMessage(*row.Error)
		}
	}
	return m
}
