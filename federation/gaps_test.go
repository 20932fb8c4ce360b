package federation_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// A server that missed a run of events and gets only part of it back
// through get_missing_events shows a limited sync timeline that starts
// after the hole, and /messages from its prev_batch fills the hole.
func TestSyncTimelineAfterFederationGap(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		joinVia(t, alice, roomID, bob)
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":30}}}`)
		r := alice.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := r.JSON["next_batch"].(string)
		// A full page of history before the hole, so /messages has to
		// notice the hole at its starting point, not at its end.
		for i := 0; i < 10; i++ {
			alice.send(t, roomID, fmt.Sprintf("alice %d", i))
		}
		bob.waitForMessage(t, roomID, "alice 9")

		// A swallows B's transactions: B thinks them delivered.
		var swallowed atomic.Int64
		holdTransactions(alice.hs, func(_ *http.Request, body []byte) {
			var txn struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			_ = json.Unmarshal(body, &txn)
			swallowed.Add(int64(len(txn.PDUs)))
		})
		const missed = 30
		for i := 0; i < missed; i++ {
			bob.send(t, roomID, fmt.Sprintf("gap %d", i))
		}
		for deadline := time.Now().Add(15 * time.Second); swallowed.Load() < missed; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("B sent %d of the %d events", swallowed.Load(), missed)
			}
		}
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler { return fedH })
		bob.send(t, roomID, "End")
		alice.waitForMessage(t, roomID, "End")

		r = alice.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter+"&since="+url.QueryEscape(since), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		tl, _ := get(r.JSON, "rooms", "join", roomID, "timeline").(map[string]any)
		evs, _ := tl["events"].([]any)
		if len(evs) == 0 || get(evs[len(evs)-1], "content", "body") != "End" {
			t.Fatalf("timeline does not end with End: %s", r.Body)
		}
		if tl["limited"] != true {
			t.Fatalf("timeline across the hole is not limited: %s", r.Body)
		}
		first := get(evs[0], "content", "body")
		for _, ev := range evs {
			if get(ev, "sender") == alice.id {
				t.Fatalf("timeline shows alice's message from before the hole: %s", r.Body)
			}
		}
		// get_missing_events brought back the last 20 of the 30 missed.
		if first != fmt.Sprintf("gap %d", missed-20) {
			t.Fatalf("timeline starts at %v, want the first event after the hole: %s", first, r.Body)
		}

		// /messages back from prev_batch fills the hole from B.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=10&from="+url.QueryEscape(tl["prev_batch"].(string)), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		chunk, _ := r.JSON["chunk"].([]any)
		var bodies []string
		for _, ev := range chunk {
			body, _ := get(ev, "content", "body").(string)
			bodies = append(bodies, body)
		}
		want := make([]string, 0, 10)
		for i := missed - 21; i >= missed-30; i-- {
			want = append(want, fmt.Sprintf("gap %d", i))
		}
		if strings.Join(bodies, "|") != strings.Join(want, "|") {
			t.Fatalf("/messages from prev_batch = %q, want %q", bodies, want)
		}
	})
}

// eventOn builds an event of alice (a user of from, joined to the room on
// host) on top of the room's current extremities on host, with the auth
// events host's current state names, signed by from.
func eventOn(t *testing.T, host, from *hearthtest.Server, roomID, sender, typ string, stateKey *string, content map[string]any, prevs []string) gomatrixserverlib.PDU {
	t.Helper()
	ctx := context.Background()
	room, err := storage.GetRoom(ctx, host.DB.Read(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	if prevs == nil {
		prevs = room.Extremities
	}
	st, err := host.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var auth []string
	for _, k := range []storage.StateKey{{Type: spec.MRoomCreate}, {Type: spec.MRoomPowerLevels}, {Type: spec.MRoomMember, StateKey: sender}} {
		if id, ok := st[k]; ok {
			auth = append(auth, id)
		}
	}
	c, _ := json.Marshal(content)
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: prevs, AuthEvents: auth, Depth: room.MaxDepth + 1}
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(from), from.Key.ID, from.Key.Private)
	var verr gomatrixserverlib.EventValidationError
	if err != nil && !(errors.As(err, &verr) && verr.Persistable) {
		t.Fatal(err)
	}
	return ev
}

// sendPDUs sends a transaction of pdus from one server to another and
// returns the per-PDU results.
func sendPDUs(t *testing.T, from, to *hearthtest.Server, txnID string, pdus ...gomatrixserverlib.PDU) map[string]fclient.PDUResult {
	t.Helper()
	raws := make([]json.RawMessage, len(pdus))
	for i, p := range pdus {
		raws[i] = p.JSON()
	}
	res, err := from.Federation.Client().SendTransaction(context.Background(), gomatrixserverlib.Transaction{TransactionID: gomatrixserverlib.TransactionID(txnID),
		Origin: serverName(from), Destination: serverName(to), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: raws})
	if err != nil {
		t.Fatal(err)
	}
	return res.PDUs
}

// A pushed event whose prev events the sender cannot supply through
// get_missing_events is refused; its state is not asked for (state_ids)
// and taken on trust.
func TestPushedEventWithUnfetchablePrevEventsIsRefused(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		joinVia(t, alice, roomID, bob)
		var stateIDs, missing atomic.Int64
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				switch {
				case strings.Contains(req.URL.Path, "/v1/state_ids/"):
					stateIDs.Add(1)
				case strings.Contains(req.URL.Path, "/v1/get_missing_events/"):
					missing.Add(1)
				}
				fedH.ServeHTTP(w, req)
			})
		})
		// The prev event exists nowhere.
		unknown := eventOn(t, bob.hs, alice.hs, roomID, alice.id, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "lost"}, nil)
		ev := eventOn(t, bob.hs, alice.hs, roomID, alice.id, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "orphan"}, []string{unknown.EventID()})
		res := sendPDUs(t, alice.hs, bob.hs, "orphan", ev)
		if res[ev.EventID()].Error == "" {
			t.Fatalf("the event without its prev events was accepted: %+v", res)
		}
		if missing.Load() == 0 || stateIDs.Load() != 0 {
			t.Fatalf("get_missing_events asked %d times (want some), state_ids %d times (want none)", missing.Load(), stateIDs.Load())
		}
		r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(ev.EventID()), nil)
		hearthtest.Expect(t, r, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// In a room version before the byte limits (10), a state key of 70 code
// points but 280 bytes is valid: such an event fetched through
// get_missing_events is kept, and so is the event after it.
func TestMissingEventWithLongByteStateKeyInRoomV10(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat", "room_version": "10", "power_level_content_override": map[string]any{"state_default": 0}})
		joinVia(t, alice, roomID, bob)
		key := strings.Repeat("💥", 70)
		breaker := eventOn(t, bob.hs, alice.hs, roomID, alice.id, "my.room.breaker", &key, map[string]any{}, nil)
		after := eventOn(t, bob.hs, alice.hs, roomID, alice.id, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "after the breaker"}, []string{breaker.EventID()})
		// A answers get_missing_events with the breaker, which it never sent.
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if !strings.Contains(req.URL.Path, "/v1/get_missing_events/") {
					fedH.ServeHTTP(w, req)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(map[string]any{"events": []json.RawMessage{breaker.JSON()}})
			})
		})
		res := sendPDUs(t, alice.hs, bob.hs, "breaker", after)
		if res[after.EventID()].Error != "" {
			t.Fatalf("the event after the breaker was refused: %+v", res)
		}
		bob.waitForMessage(t, roomID, "after the breaker")
		r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/my.room.breaker/"+url.PathEscape(key), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
	})
}

// An event from another server that arrives after local events it does
// not follow (a network partition) comes down sync after them; sync's
// prev_batch then pages back through the local events, which sync has
// not shown, not from the late event's lower depth.
func TestPrevBatchAfterLateRemoteEvent(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob, charlie := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[0], "bob"), newFedUser(t, fed[1], "charlie")
		roomID := charlie.createRoom(t, map[string]any{"preset": "public_chat"})
		joinVia(t, alice, roomID, charlie)
		joinVia(t, bob, roomID, charlie)
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":4}}}`)
		r := bob.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := r.JSON["next_batch"].(string)

		// A loses charlie's next transaction: it is kept to replay later.
		type held struct {
			req  *http.Request
			body []byte
		}
		heldTxns := make(chan held, 10)
		holdTransactions(alice.hs, func(req *http.Request, body []byte) { heldTxns <- held{req, body} })
		charlie.send(t, roomID, "Event 1'")
		var late held
		select {
		case late = <-heldTxns:
		case <-time.After(15 * time.Second):
			t.Fatal("charlie's server never sent its event")
		}
		var fedH http.Handler
		alice.hs.WrapFederation(func(h, _ http.Handler) http.Handler { fedH = h; return h })

		var local []string
		for i := 1; i <= 4; i++ {
			local = append(local, sendAndID(t, alice, roomID, fmt.Sprintf("event %d", i)))
		}
		// The partition heals: the transaction arrives.
		replay := late.req.Clone(context.Background())
		replay.Body = io.NopCloser(strings.NewReader(string(late.body)))
		rec := httptest.NewRecorder()
		fedH.ServeHTTP(rec, replay)
		if rec.Code != http.StatusOK {
			t.Fatalf("replayed transaction: %d %s", rec.Code, rec.Body)
		}
		alice.waitForMessage(t, roomID, "Event 1'")
		for i := 5; i <= 7; i++ {
			local = append(local, sendAndID(t, alice, roomID, fmt.Sprintf("event %d", i)))
		}

		r = bob.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter+"&since="+url.QueryEscape(since), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		tl, _ := get(r.JSON, "rooms", "join", roomID, "timeline").(map[string]any)
		evs, _ := tl["events"].([]any)
		var bodies []string
		for _, ev := range evs {
			body, _ := get(ev, "content", "body").(string)
			bodies = append(bodies, body)
		}
		if strings.Join(bodies, "|") != "Event 1'|event 5|event 6|event 7" {
			t.Fatalf("sync timeline %q, want the late event and events 5 to 7", bodies)
		}
		r = bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=4&from="+url.QueryEscape(tl["prev_batch"].(string)), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		var ids []string
		for _, ev := range r.JSON["chunk"].([]any) {
			ids = append(ids, get(ev, "event_id").(string))
		}
		want := []string{local[3], local[2], local[1], local[0]}
		if strings.Join(ids, " ") != strings.Join(want, " ") {
			t.Fatalf("/messages from prev_batch = %v, want events 4 to 1 %v", ids, want)
		}
	})
}

func sendAndID(t *testing.T, u fedUser, roomID, body string) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+fmt.Sprint(time.Now().UnixNano()),
		map[string]any{"msgtype": "m.text", "body": body})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

// joinVia joins u to a room through the server of via.
func joinVia(t *testing.T, u fedUser, roomID string, via fedUser) {
	t.Helper()
	r := u.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(via.hs.Config.ServerName), map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
}

// holdTransactions makes hs answer every transaction (PUT /send) as if
// it had taken it, without taking it: keep gets each one instead.
func holdTransactions(hs *hearthtest.Server, keep func(req *http.Request, body []byte)) {
	hs.WrapFederation(func(fedH, _ http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodPut || !strings.Contains(req.URL.Path, "/federation/v1/send/") {
				fedH.ServeHTTP(w, req)
				return
			}
			body, _ := io.ReadAll(req.Body)
			keep(req, body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"pdus":{}}`))
		})
	})
}
