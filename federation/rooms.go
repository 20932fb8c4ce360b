package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
)

// Room endpoints of the server-server API: joins, invites, and reading
// events and state. The room core does the work; these handlers check the
// room's ACL for the origin and shape the wire format.

func (a *API) roomRoutes(r chi.Router) {
	f := "/_matrix/federation"
	r.Get(f+"/v1/make_join/{roomId}/{userId}", a.makeJoin)
	r.Put(f+"/v1/send_join/{roomId}/{eventId}", a.sendJoinV1)
	r.Put(f+"/v2/send_join/{roomId}/{eventId}", a.sendJoin)
	r.Put(f+"/v2/invite/{roomId}/{eventId}", a.invite)
	r.Get(f+"/v1/make_leave/{roomId}/{userId}", a.makeLeave)
	r.Put(f+"/v1/send_leave/{roomId}/{eventId}", a.sendLeaveV1)
	r.Put(f+"/v2/send_leave/{roomId}/{eventId}", a.sendLeave)
	r.Get(f+"/v1/make_knock/{roomId}/{userId}", a.makeKnock)
	r.Put(f+"/v1/send_knock/{roomId}/{eventId}", a.sendKnock)
	r.Get(f+"/v1/state/{roomId}", a.state)
	r.Get(f+"/v1/state_ids/{roomId}", a.stateIDs)
	r.Get(f+"/v1/event/{eventId}", a.event)
	r.Get(f+"/v1/backfill/{roomId}", a.backfill)
	r.Post(f+"/v1/get_missing_events/{roomId}", a.getMissingEvents)
	r.Get(f+"/v1/event_auth/{roomId}/{eventId}", a.eventAuth)
}

// aclGate refuses requests from servers the room's ACL denies.
func (a *API) aclGate(w http.ResponseWriter, r *http.Request, roomID string) bool {
	if !a.ACLAllows(r.Context(), roomID, Origin(r.Context())) {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("Server ACL denies %s", Origin(r.Context())))
		return false
	}
	return true
}

// GET /v1/make_join/{roomId}/{userId}?ver=...
func (a *API) makeJoin(w http.ResponseWriter, r *http.Request) {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	if len(vers) == 0 {
		vers = []gomatrixserverlib.RoomVersion{"1"} // the spec's default when ver is absent
	}
	res, err := a.rooms.MakeJoin(r.Context(), Origin(r.Context()), roomID, userID, vers)
	if err != nil {
		writeLibError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": res.JoinTemplateEvent, "room_version": res.RoomVersion})
}

// writeLibError writes errors the library returns as spec.MatrixError (or
// our own) with their status.
func writeLibError(w http.ResponseWriter, r *http.Request, err error) {
	switch e := err.(type) {
	case spec.MatrixError:
		status := http.StatusBadRequest
		switch e.ErrCode {
		case spec.ErrorForbidden:
			status = http.StatusForbidden
		case spec.ErrorNotFound:
			status = http.StatusNotFound
		}
		mxhttp.WriteError(w, r, &mxhttp.Error{Status: status, ErrCode: string(e.ErrCode), Message: e.Err})
	case spec.IncompatibleRoomVersionError:
		mxhttp.WriteError(w, r, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: e.Error(), Extra: map[string]any{"room_version": e.RoomVersion}})
	case spec.InternalServerError:
		mxhttp.WriteError(w, r, &mxhttp.Error{Status: http.StatusInternalServerError, ErrCode: "M_UNKNOWN", Message: "Internal server error"})
	default:
		mxhttp.WriteError(w, r, err)
	}
}

// PUT /v2/send_join/{roomId}/{eventId}
func (a *API) sendJoin(w http.ResponseWriter, r *http.Request) {
	if res := a.receiveJoin(w, r); res != nil {
		mxhttp.WriteJSON(w, http.StatusOK, res)
	}
}

// PUT /v1/send_join/{roomId}/{eventId} (deprecated; answers [200, {...}])
func (a *API) sendJoinV1(w http.ResponseWriter, r *http.Request) {
	if res := a.receiveJoin(w, r); res != nil {
		mxhttp.WriteJSON(w, http.StatusOK, []any{200, res})
	}
}

// receiveJoin checks and persists a send_join and returns the answer, or
// writes the error and returns nil.
func (a *API) receiveJoin(w http.ResponseWriter, r *http.Request) map[string]any {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	if !a.aclGate(w, r, roomID) {
		return nil
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		mxhttp.WriteError(w, r, err)
		return nil
	}
	join, state, chain, err := a.rooms.SendJoin(r.Context(), Origin(r.Context()), roomID, eventID, raw)
	if err != nil {
		writeLibError(w, r, err)
		return nil
	}
	a.relay(r, roomID, join.EventID())
	servers, _ := a.rooms.ServersInRoom(r.Context(), roomID)
	return map[string]any{
		"origin": a.serverName, "event": json.RawMessage(join.JSON()),
		"state": pduJSONs(state), "auth_chain": pduJSONs(chain),
		"members_omitted": false, "servers_in_room": servers,
	}
}

// GET /v1/make_leave/{roomId}/{userId}
func (a *API) makeLeave(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	res, err := a.rooms.MakeLeave(r.Context(), Origin(r.Context()), roomID, pathParam(r, "userId"))
	if err != nil {
		writeLibError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": res.LeaveTemplateEvent, "room_version": res.RoomVersion})
}

// receiveLeave reads and hands on the body of send_leave.
func (a *API) receiveLeave(w http.ResponseWriter, r *http.Request) bool {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return false
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		mxhttp.WriteError(w, r, err)
		return false
	}
	if err := a.rooms.SendLeave(r.Context(), Origin(r.Context()), roomID, pathParam(r, "eventId"), raw); err != nil {
		writeLibError(w, r, err)
		return false
	}
	a.relay(r, roomID, pathParam(r, "eventId"))
	return true
}

// PUT /v2/send_leave/{roomId}/{eventId}
func (a *API) sendLeave(w http.ResponseWriter, r *http.Request) {
	if a.receiveLeave(w, r) {
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
	}
}

// PUT /v1/send_leave/{roomId}/{eventId} (deprecated; answers [200, {}])
func (a *API) sendLeaveV1(w http.ResponseWriter, r *http.Request) {
	if a.receiveLeave(w, r) {
		mxhttp.WriteJSON(w, http.StatusOK, []any{200, map[string]any{}})
	}
}

// GET /v1/make_knock/{roomId}/{userId}?ver=...
func (a *API) makeKnock(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	var vers []gomatrixserverlib.RoomVersion
	for _, v := range r.URL.Query()["ver"] {
		vers = append(vers, gomatrixserverlib.RoomVersion(v))
	}
	proto, ver, err := a.rooms.MakeKnock(r.Context(), Origin(r.Context()), roomID, pathParam(r, "userId"), vers)
	if err != nil {
		writeLibError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": proto, "room_version": ver})
}

// PUT /v1/send_knock/{roomId}/{eventId}
func (a *API) sendKnock(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	stripped, err := a.rooms.SendKnock(r.Context(), Origin(r.Context()), roomID, pathParam(r, "eventId"), raw)
	if err != nil {
		writeLibError(w, r, err)
		return
	}
	a.relay(r, roomID, pathParam(r, "eventId"))
	if stripped == nil {
		stripped = []json.RawMessage{}
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"knock_room_state": stripped})
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
func (a *API) invite(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	var body struct {
		Event           json.RawMessage               `json:"event"`
		RoomVersion     gomatrixserverlib.RoomVersion `json:"room_version"`
		InviteRoomState json.RawMessage               `json:"invite_room_state"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.RoomVersion == "" {
		body.RoomVersion = "1"
	}
	signed, err := a.rooms.ReceiveInvite(r.Context(), Origin(r.Context()), body.RoomVersion, body.Event, body.InviteRoomState)
	if err != nil {
		writeLibError(w, r, err)
		return
	}
	if signed.RoomID().String() != roomID || signed.EventID() != pathParam(r, "eventId") {
		mxhttp.WriteError(w, r, mxhttp.BadJSON("The event does not match the room and event ID of the path"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event": json.RawMessage(signed.JSON())})
}

// GET /v1/state/{roomId}?event_id=
func (a *API) state(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	state, chain, err := a.rooms.StateForServer(r.Context(), Origin(r.Context()), roomID, r.URL.Query().Get("event_id"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdus": pduJSONs(state), "auth_chain": pduJSONs(chain)})
}

// GET /v1/state_ids/{roomId}?event_id=
func (a *API) stateIDs(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	state, chain, err := a.rooms.StateForServer(r.Context(), Origin(r.Context()), roomID, r.URL.Query().Get("event_id"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	ids := func(pdus []gomatrixserverlib.PDU) []string {
		out := make([]string, 0, len(pdus))
		for _, p := range pdus {
			out = append(out, p.EventID())
		}
		return out
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": ids(state), "auth_chain_ids": ids(chain)})
}

// transaction is the wire shape of /event and /backfill answers.
func (a *API) transaction(pdus []json.RawMessage) map[string]any {
	return map[string]any{"origin": a.serverName, "origin_server_ts": spec.AsTimestamp(time.Now()), "pdus": pdus}
}

// GET /v1/event/{eventId}
func (a *API) event(w http.ResponseWriter, r *http.Request) {
	ev, err := a.rooms.EventForServer(r.Context(), Origin(r.Context()), pathParam(r, "eventId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if !a.aclGate(w, r, ev.RoomID) {
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, a.transaction([]json.RawMessage{ev.PDU.JSON()}))
}

// GET /v1/backfill/{roomId}?v=...&limit=
func (a *API) backfill(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("limit must be a positive integer"))
		return
	}
	evs, err := a.rooms.Backfill(r.Context(), Origin(r.Context()), roomID, q["v"], min(limit, 100))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, a.transaction(eventJSONs(evs)))
}

func eventJSONs(evs []*rooms.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(evs))
	for _, ev := range evs {
		out = append(out, json.RawMessage(ev.PDU.JSON()))
	}
	return out
}

// POST /v1/get_missing_events/{roomId}
func (a *API) getMissingEvents(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	var body struct {
		Earliest []string `json:"earliest_events"`
		Latest   []string `json:"latest_events"`
		Limit    int      `json:"limit"`
		MinDepth int64    `json:"min_depth"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if body.Limit <= 0 {
		body.Limit = 10
	}
	evs, err := a.rooms.MissingEvents(r.Context(), Origin(r.Context()), roomID, body.Earliest, body.Latest, min(body.Limit, 100), body.MinDepth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"events": eventJSONs(evs)})
}

// GET /v1/event_auth/{roomId}/{eventId}
func (a *API) eventAuth(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	if !a.aclGate(w, r, roomID) {
		return
	}
	chain, err := a.rooms.EventAuth(r.Context(), Origin(r.Context()), roomID, pathParam(r, "eventId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": pduJSONs(chain)})
}
