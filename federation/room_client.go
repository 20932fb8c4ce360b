package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrix"
	"github.com/tidwall/gjson"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/rooms"
)

// roomClient is what the room core asks of other servers (rooms.Remote,
// rooms.JoinClient, rooms.InviteClient), over the signing client.
type roomClient struct{ a *API }

var (
	_ rooms.Remote           = roomClient{}
	_ rooms.JoinClient       = roomClient{}
	_ rooms.InviteClient     = roomClient{}
	_ rooms.MembershipClient = roomClient{}
	_ rooms.StateFetcher     = roomClient{}
)

func (c roomClient) MissingEvents(ctx context.Context, server spec.ServerName, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error) {
	ver, err := c.a.rooms.Version(ctx, roomID)
	if err != nil {
		return nil, err
	}
	res, err := c.a.client.LookupMissingEvents(ctx, c.a.serverName, server, roomID, fclient.MissingEvents{
		Limit: limit, MinDepth: int(minDepth), EarliestEvents: earliest, LatestEvents: latest,
	}, ver.Version())
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(res.Events))
	for _, e := range res.Events {
		out = append(out, json.RawMessage(e))
	}
	return out, nil
}

func (c roomClient) StateIDsAt(ctx context.Context, server spec.ServerName, roomID, eventID string) ([]string, []string, error) {
	res, err := c.a.client.LookupStateIDs(ctx, c.a.serverName, server, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	return res.StateEventIDs, res.AuthEventIDs, nil
}

func (c roomClient) Event(ctx context.Context, server spec.ServerName, eventID string) (json.RawMessage, error) {
	txn, err := c.a.client.GetEvent(ctx, c.a.serverName, server, eventID)
	if err != nil {
		return nil, err
	}
	if len(txn.PDUs) != 1 {
		return nil, errors.New("the server answered /event without exactly one PDU")
	}
	return json.RawMessage(txn.PDUs[0]), nil
}

func (c roomClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := c.a.client.MakeJoin(ctx, origin, s, roomID, userID)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

func (c roomClient) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	res, err := c.a.client.SendJoin(ctx, origin, s, event)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// SendJoinPartialState is send_join with omit_members=true (MSC3706).
// The answer (tens of MB for a big room: its state less the members) is
// split with gjson after one validation pass: the library's client
// decodes it with encoding/json, which scans it twice and copies every
// event.
func (c roomClient) SendJoinPartialState(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	raw, ok := c.a.client.(rawRequester)
	if !ok {
		res, err := c.a.client.SendJoinPartialState(ctx, origin, s, event)
		if err != nil {
			return nil, err
		}
		return &res, nil
	}
	path := "/_matrix/federation/v2/send_join/" + url.PathEscape(event.RoomID().String()) + "/" + url.PathEscape(event.EventID()) + "?omit_members=true"
	fr := fclient.NewFederationRequest(http.MethodPut, origin, s, path)
	if err := fr.SetContent(event); err != nil {
		return nil, err
	}
	if err := fr.Sign(c.a.serverName, c.a.key.ID, c.a.key.Private); err != nil {
		return nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	resp, err := raw.DoHTTPRequest(ctx, req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		// Perhaps a server without v2: the library falls back to v1.
		res, err := c.a.client.SendJoinPartialState(ctx, origin, s, event)
		if err != nil {
			return nil, err
		}
		return &res, nil
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSendJoinAnswer+1))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		// As the library's client reports it.
		herr := gomatrix.HTTPError{Code: resp.StatusCode, Message: fmt.Sprintf("send_join to %s: %d %s", s, resp.StatusCode, body), Contents: body}
		var respErr gomatrix.RespError
		if json.Unmarshal(body, &respErr) == nil && respErr.ErrCode != "" {
			herr.WrappedError = respErr
		}
		return nil, herr
	}
	return parseSendJoinAnswer(body)
}

// maxSendJoinAnswer bounds a send_join answer read into memory.
const maxSendJoinAnswer = 1 << 30

// rawRequester is the part of the library's federation client that sends
// a signed request and hands back the response as it is.
type rawRequester interface {
	DoHTTPRequest(ctx context.Context, req *http.Request) (*http.Response, error)
}

// parseSendJoinAnswer splits a send_join answer as fclient.RespSendJoin
// holds it, each event a slice of body.
func parseSendJoinAnswer(body []byte) (*fclient.RespSendJoin, error) {
	if len(body) > maxSendJoinAnswer {
		return nil, fmt.Errorf("the send_join answer is larger than %d bytes", maxSendJoinAnswer)
	}
	if !gjson.ValidBytes(body) {
		return nil, errors.New("the send_join answer is not valid JSON")
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return nil, errors.New("the send_join answer is not a JSON object")
	}
	events := func(key string, v gjson.Result) (gomatrixserverlib.EventJSONs, error) {
		if v.Type == gjson.Null {
			return nil, nil
		}
		if !v.IsArray() {
			return nil, fmt.Errorf("the send_join answer's %s is not an array", key)
		}
		var out gomatrixserverlib.EventJSONs
		var bad error
		v.ForEach(func(_, ev gjson.Result) bool {
			if !ev.IsObject() {
				bad = fmt.Errorf("the send_join answer's %s holds something other than events", key)
				return false
			}
			out = append(out, spec.RawJSON(ev.Raw))
			return true
		})
		return out, bad
	}
	// One pass over the top level: each Get would scan it again.
	res := &fclient.RespSendJoin{}
	var err error
	root.ForEach(func(key, v gjson.Result) bool {
		switch key.Str {
		case "state":
			res.StateEvents, err = events(key.Str, v)
		case "auth_chain":
			res.AuthEvents, err = events(key.Str, v)
		case "event":
			if v.IsObject() {
				res.Event = spec.RawJSON(v.Raw)
			}
		case "origin":
			res.Origin = spec.ServerName(v.Str)
		case "members_omitted":
			res.MembersOmitted = v.Bool()
		case "servers_in_room":
			for _, srv := range v.Array() {
				if srv.Type == gjson.String {
					res.ServersInRoom = append(res.ServersInRoom, srv.Str)
				}
			}
		}
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// StateAt fetches the state before eventID with its auth chain (/state).
func (c roomClient) StateAt(ctx context.Context, server spec.ServerName, roomID, eventID string) ([]json.RawMessage, []json.RawMessage, error) {
	ver, err := c.a.rooms.Version(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	res, err := c.a.client.LookupState(ctx, c.a.serverName, server, roomID, eventID, ver.Version())
	if err != nil {
		return nil, nil, err
	}
	raws := func(evs gomatrixserverlib.EventJSONs) []json.RawMessage {
		out := make([]json.RawMessage, len(evs))
		for i, e := range evs {
			out[i] = json.RawMessage(e)
		}
		return out
	}
	return raws(res.StateEvents), raws(res.AuthEvents), nil
}

func (c roomClient) InviteV2(ctx context.Context, destination spec.ServerName, roomVersion gomatrixserverlib.RoomVersion, event gomatrixserverlib.PDU, roomState []json.RawMessage) (json.RawMessage, error) {
	// Built here rather than with fclient.InviteV2Request, which can only
	// carry stripped events.
	body := map[string]any{
		"room_version": roomVersion, "event": json.RawMessage(event.JSON()), "invite_room_state": roomState,
	}
	path := "/_matrix/federation/v2/invite/" + url.PathEscape(event.RoomID().String()) + "/" + url.PathEscape(event.EventID())
	fr := fclient.NewFederationRequest(http.MethodPut, c.a.serverName, destination, path)
	if err := fr.SetContent(body); err != nil {
		return nil, err
	}
	if err := fr.Sign(c.a.serverName, c.a.key.ID, c.a.key.Private); err != nil {
		return nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	var res struct {
		Event json.RawMessage `json:"event"`
	}
	if err := c.a.client.DoRequestAndParseResponse(ctx, req, &res); err != nil {
		return nil, err
	}
	return res.Event, nil
}

// refusal is a remote server's error answer, readable in logs and
// carrying its status for the room core (rooms.remoteRefusal).
type refusal struct {
	status int
	body   string
}

func (e refusal) Error() string   { return fmt.Sprintf("%d %s", e.status, e.body) }
func (e refusal) HTTPStatus() int { return e.status }
func (e refusal) Body() []byte    { return []byte(e.body) }

// readable turns the client's HTTP errors into refusal.
func readable(err error) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) {
		return refusal{status: he.Code, body: string(he.Contents)}
	}
	return err
}

func (c roomClient) MakeLeave(ctx context.Context, s spec.ServerName, roomID, userID string) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	res, err := c.a.client.MakeLeave(ctx, c.a.serverName, s, roomID, userID)
	return res.LeaveEvent, res.RoomVersion, readable(err)
}

func (c roomClient) SendLeave(ctx context.Context, s spec.ServerName, event gomatrixserverlib.PDU) error {
	return readable(c.a.client.SendLeave(ctx, c.a.serverName, s, event))
}

func (c roomClient) MakeKnock(ctx context.Context, s spec.ServerName, roomID, userID string, versions []gomatrixserverlib.RoomVersion) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	res, err := c.a.client.MakeKnock(ctx, c.a.serverName, s, roomID, userID, versions)
	return res.KnockEvent, res.RoomVersion, readable(err)
}

// SendKnock sends the knock and returns knock_room_state as the resident
// server sent it: the library's response type keeps only the stripped
// fields, and the entries' signatures are checked (v1.16).
func (c roomClient) SendKnock(ctx context.Context, s spec.ServerName, event gomatrixserverlib.PDU) ([]json.RawMessage, error) {
	path := "/_matrix/federation/v1/send_knock/" + url.PathEscape(event.RoomID().String()) + "/" + url.PathEscape(event.EventID())
	var res struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	if err := c.a.request(ctx, http.MethodPut, s, path, event, &res); err != nil {
		return nil, readable(err)
	}
	return res.KnockRoomState, nil
}

func (c roomClient) Backfill(ctx context.Context, s spec.ServerName, roomID string, from []string, limit int) ([]json.RawMessage, error) {
	txn, err := c.a.client.Backfill(ctx, c.a.serverName, s, roomID, limit, from)
	if err != nil {
		return nil, readable(err)
	}
	out := make([]json.RawMessage, 0, len(txn.PDUs))
	for _, p := range txn.PDUs {
		out = append(out, json.RawMessage(p))
	}
	return out, nil
}
