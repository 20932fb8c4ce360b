package federation

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
)

// Room endpoints of the server-server API: joins, invites, and reading
// events and state. The room core does the work; these handlers check the
// room's ACL for the origin and shape the wire format.

// GET /v1/make_join/{roomId}/{userId}?ver=...
func (a *API) makeJoin(r *http.Request, origin spec.ServerName) (any, error) {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	if err := a.refuseIfPartial(r, roomID); err != nil {
		return nil, err
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	if len(vers) == 0 {
		vers = []gomatrixserverlib.RoomVersion{"1"} // the spec's default when ver is absent
	}
	res, err := a.rooms.MakeJoin(r.Context(), origin, roomID, userID, vers)
	if err != nil {
		return nil, libError(err)
	}
	return map[string]any{"event": res.JoinTemplateEvent, "room_version": res.RoomVersion}, nil
}

// libError is the Matrix error for an error the library returns as
// spec.MatrixError (or our own), with its status.
func libError(err error) error {
	switch e := err.(type) {
	case spec.MatrixError:
		status := http.StatusBadRequest
		switch e.ErrCode {
		case spec.ErrorForbidden:
			status = http.StatusForbidden
		case spec.ErrorNotFound:
			status = http.StatusNotFound
		}
		return &mxhttp.Error{Status: status, ErrCode: string(e.ErrCode), Message: e.Err}
	case spec.IncompatibleRoomVersionError:
		return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: e.Error(), Extra: map[string]any{"room_version": e.RoomVersion}}
	case spec.InternalServerError:
		return &mxhttp.Error{Status: http.StatusInternalServerError, ErrCode: "M_UNKNOWN", Message: "Internal server error"}
	default:
		return err
	}
}

// PUT /v2/send_join/{roomId}/{eventId}
func (a *API) sendJoin(r *http.Request, origin spec.ServerName) (any, error) {
	return a.receiveJoin(r, origin)
}

// PUT /v1/send_join/{roomId}/{eventId} (deprecated; answers [200, {...}])
func (a *API) sendJoinV1(r *http.Request, origin spec.ServerName) (any, error) {
	res, err := a.receiveJoin(r, origin)
	if err != nil {
		return nil, err
	}
	return json.RawMessage(slices.Concat([]byte("[200,"), res, []byte("]"))), nil
}

// receiveJoin checks and persists a send_join and returns the answer.
func (a *API) receiveJoin(r *http.Request, origin spec.ServerName) (json.RawMessage, error) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	if err := a.refuseIfPartial(r, roomID); err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	// MSC3706: omit_members is true or false; anything else is refused.
	var omit bool
	switch v := r.URL.Query().Get("omit_members"); v {
	case "", "false":
	case "true":
		omit = true
	default:
		return nil, mxhttp.InvalidParam("omit_members must be true or false, not %q", v)
	}
	join, state, chain, err := a.rooms.SendJoin(r.Context(), origin, roomID, eventID, raw, omit)
	if err != nil {
		return nil, libError(err)
	}
	a.relay(r, roomID, join.EventID())
	var servers []spec.ServerName
	if join.StateKey() != nil {
		servers, err = a.rooms.ServersBeforeJoin(r.Context(), roomID, *join.StateKey())
		if err != nil {
			return nil, err
		}
	}
	return withEventArrays(map[string]any{
		"origin": a.serverName, "event": json.RawMessage(join.JSON()),
		"members_omitted": omit, "servers_in_room": servers,
	}, map[string]map[string]json.RawMessage{"state": state, "auth_chain": chain})
}

// withEventArrays is the JSON object of fields plus, for each key of
// arrays, an array of the events (stored JSON, written as it is: a big
// room's state is tens of MB, which encoding/json would check and compact
// event by event).
func withEventArrays(fields map[string]any, arrays map[string]map[string]json.RawMessage) (json.RawMessage, error) {
	b, err := json.Marshal(fields)
	if err != nil {
		return nil, err
	}
	size := len(b)
	for _, evs := range arrays {
		for _, raw := range evs {
			size += len(raw) + 1
		}
	}
	out := make([]byte, 0, size+64*len(arrays))
	out = append(out, b[:len(b)-1]...) // without the closing brace
	for _, k := range slices.Sorted(maps.Keys(arrays)) {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = strconv.AppendQuote(out, k)
		out = append(out, ':', '[')
		first := true
		for _, raw := range arrays[k] {
			if !first {
				out = append(out, ',')
			}
			first = false
			out = append(out, raw...)
		}
		out = append(out, ']')
	}
	return append(out, '}'), nil
}

// refuseIfPartial refuses a join or knock through us while our copy of
// the room has partial state (MSC3902): we could not give a full answer
// nor check it against the room's members. 404 M_NOT_FOUND, as for a room
// we are not in (what Synapse answers).
func (a *API) refuseIfPartial(r *http.Request, roomID string) error {
	partial, err := a.rooms.IsPartialState(r.Context(), roomID)
	if err != nil {
		return err
	}
	if partial {
		return mxhttp.NotFound("This server's copy of room %s is still being synchronised", roomID)
	}
	return nil
}

// refuseStateIfPartial refuses /state and /state_ids while our copy of
// the room has partial state: any state we gave would lack members
// (MSC3902). 403, as Synapse answers (MSC3895 proposes its own errcode).
func (a *API) refuseStateIfPartial(r *http.Request, roomID string) error {
	partial, err := a.rooms.IsPartialState(r.Context(), roomID)
	if err != nil {
		return err
	}
	if partial {
		return mxhttp.Forbidden("This server's copy of room %s is still being synchronised", roomID)
	}
	return nil
}

// GET /v1/make_leave/{roomId}/{userId}
func (a *API) makeLeave(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	res, err := a.rooms.MakeLeave(r.Context(), origin, roomID, pathParam(r, "userId"))
	if err != nil {
		return nil, libError(err)
	}
	return map[string]any{"event": res.LeaveTemplateEvent, "room_version": res.RoomVersion}, nil
}

// receiveLeave reads and hands on the body of send_leave.
func (a *API) receiveLeave(r *http.Request, origin spec.ServerName) error {
	roomID := pathParam(r, "roomId")
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return err
	}
	if err := a.rooms.SendLeave(r.Context(), origin, roomID, pathParam(r, "eventId"), raw); err != nil {
		return libError(err)
	}
	a.relay(r, roomID, pathParam(r, "eventId"))
	return nil
}

// PUT /v2/send_leave/{roomId}/{eventId}
func (a *API) sendLeave(r *http.Request, origin spec.ServerName) (any, error) {
	if err := a.receiveLeave(r, origin); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// PUT /v1/send_leave/{roomId}/{eventId} (deprecated; answers [200, {}])
func (a *API) sendLeaveV1(r *http.Request, origin spec.ServerName) (any, error) {
	if err := a.receiveLeave(r, origin); err != nil {
		return nil, err
	}
	return []any{200, map[string]any{}}, nil
}

// GET /v1/make_knock/{roomId}/{userId}?ver=...
func (a *API) makeKnock(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	if err := a.refuseIfPartial(r, roomID); err != nil {
		return nil, err
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	proto, ver, err := a.rooms.MakeKnock(r.Context(), origin, roomID, pathParam(r, "userId"), vers)
	if err != nil {
		return nil, libError(err)
	}
	return map[string]any{"event": proto, "room_version": ver}, nil
}

// PUT /v1/send_knock/{roomId}/{eventId}
func (a *API) sendKnock(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	if err := a.refuseIfPartial(r, roomID); err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	stripped, err := a.rooms.SendKnock(r.Context(), origin, roomID, pathParam(r, "eventId"), raw)
	if err != nil {
		return nil, libError(err)
	}
	a.relay(r, roomID, pathParam(r, "eventId"))
	if stripped == nil {
		stripped = []json.RawMessage{}
	}
	return map[string]any{"knock_room_state": stripped}, nil
}

// relay sends an event another server made through us (send_join,
// send_leave, send_knock) on to the other servers in the room: it reached
// only us, and our fan-out sends only our own users' events.
func (a *API) relay(r *http.Request, roomID, eventID string) {
	servers, err := a.rooms.ServersInRoom(r.Context(), roomID)
	if err != nil {
		a.log.Warn("relaying an event: listing servers", "room", roomID, "err", err)
		return
	}
	origin := Origin(r.Context())
	var dests []spec.ServerName
	for _, s := range servers {
		if s != a.serverName && s != origin {
			dests = append(dests, s)
		}
	}
	if len(dests) == 0 {
		return
	}
	if err := a.queue.SendEvents(context.WithoutCancel(r.Context()), dests, []string{eventID}); err != nil {
		a.log.Warn("relaying an event", "room", roomID, "event", eventID, "err", err)
	}
}

func pduJSONs(pdus []gomatrixserverlib.PDU) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(pdus))
	for _, p := range pdus {
		out = append(out, json.RawMessage(p.JSON()))
	}
	return out
}

// PUT /v2/invite/{roomId}/{eventId}
func (a *API) invite(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	var body struct {
		Event           json.RawMessage               `json:"event"`
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		InviteRoomState json.RawMessage               `json:"invite_room_state"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.RoomVersion == "" {
		body.RoomVersion = "1"
	}
	signed, err := a.rooms.ReceiveInvite(r.Context(), origin, body.RoomVersion, body.Event, body.InviteRoomState)
	if err != nil {
		return nil, libError(err)
	}
	if signed.RoomID().String() != roomID || signed.EventID() != pathParam(r, "eventId") {
		return nil, mxhttp.BadJSON("The event does not match the room and event ID of the path")
	}
	return map[string]any{"event": json.RawMessage(signed.JSON())}, nil
}

// GET /v1/state/{roomId}?event_id=
func (a *API) state(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	if err := a.refuseStateIfPartial(r, roomID); err != nil {
		return nil, err
	}
	state, chain, err := a.rooms.StateForServer(r.Context(), origin, roomID, r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, err
	}
	return withEventArrays(map[string]any{}, map[string]map[string]json.RawMessage{"pdus": state, "auth_chain": chain})
}

// GET /v1/state_ids/{roomId}?event_id=
func (a *API) stateIDs(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	if err := a.refuseStateIfPartial(r, roomID); err != nil {
		return nil, err
	}
	state, chain, err := a.rooms.StateForServer(r.Context(), origin, roomID, r.URL.Query().Get("event_id"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"pdu_ids": slices.Collect(maps.Keys(state)), "auth_chain_ids": slices.Collect(maps.Keys(chain))}, nil
}

// transaction is the wire shape of /event and /backfill answers.
func (a *API) transaction(pdus []json.RawMessage) map[string]any {
	return map[string]any{"origin": a.serverName, "origin_server_ts": spec.AsTimestamp(time.Now()), "pdus": pdus}
}

// GET /v1/event/{eventId}
func (a *API) event(r *http.Request, origin spec.ServerName) (any, error) {
	ev, err := a.rooms.EventForServer(r.Context(), origin, pathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	if err := a.checkACL(r.Context(), ev.RoomID, origin); err != nil {
		return nil, err
	}
	return a.transaction([]json.RawMessage{ev.PDU.JSON()}), nil
}

// GET /v1/backfill/{roomId}?v=...&limit=
func (a *API) backfill(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 {
		return nil, mxhttp.InvalidParam("limit must be a positive integer")
	}
	evs, err := a.rooms.Backfill(r.Context(), origin, roomID, q["v"], min(limit, 100))
	if err != nil {
		return nil, err
	}
	return a.transaction(eventJSONs(evs)), nil
}

func eventJSONs(evs []*rooms.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, json.RawMessage(ev.PDU.JSON()))
	}
	return out
}

// POST /v1/get_missing_events/{roomId}
func (a *API) getMissingEvents(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Limit <= 0 {
		body.Limit = 10
	}
	evs, err := a.rooms.MissingEvents(r.Context(), origin, roomID, body.Earliest, body.Latest, min(body.Limit, 100), body.MinDepth)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": eventJSONs(evs)}, nil
}

// GET /v1/event_auth/{roomId}/{eventId}
func (a *API) eventAuth(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	chain, err := a.rooms.EventAuth(r.Context(), origin, roomID, pathParam(r, "eventId"))
	if err != nil {
		return nil, err
	}
	return map[string]any{"auth_chain": pduJSONs(chain)}, nil
}
