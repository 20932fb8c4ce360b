package federation_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// Owned state (MSC3757) across servers: the state a joining server gets
// keeps the owned keys, owned state sent on either server reaches the
// other, and an event that breaks the rule is rejected on receipt.
func TestOwnedStateOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		const typ = "com.example.test"
		roomID := bob.createRoom(t, map[string]any{
			"room_version": "org.matrix.msc3757.10", "preset": "public_chat",
			"power_level_content_override": map[string]any{"events": map[string]int{typ: 0}},
		})
		put := func(u fedUser, key string, n int) {
			t.Helper()
			r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(key), map[string]any{"n": n})
			hearthtest.Expect(t, r, http.StatusOK, "")
		}
		seen := func(u fedUser, key string, n int) {
			t.Helper()
			eventually(t, u.id+" sees "+key+"="+string(rune('0'+n)), func() bool {
				r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(key), nil)
				return r.Status == http.StatusOK && r.JSON["n"] == float64(n)
			})
		}
		// Before alice's server is in the room: bob's own key with a
		// suffix, and a key the creator sets for a user who is not in it.
		put(bob, bob.id+"_dev", 1)
		put(bob, "@nobody:"+alice.hs.Config.ServerName+"_x", 2)

		r := alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		seen(alice, bob.id+"_dev", 1)
		seen(alice, "@nobody:"+alice.hs.Config.ServerName+"_x", 2)
		if got := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.create/", nil).JSON["room_version"]; got != "org.matrix.msc3757.10" {
			t.Fatalf("room version on the joining server: %v", got)
		}

		// Sent on A, received on B; the creator's overwrite received on A.
		put(alice, alice.id+"_dev", 3)
		seen(bob, alice.id+"_dev", 3)
		put(bob, alice.id+"_dev", 4)
		seen(alice, alice.id+"_dev", 4)
		// Alice may not overwrite the creator's key, on her server...
		r = alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(bob.id+"_dev"), map[string]any{"n": 5})
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")

		// ...nor by sending B such an event herself: B rejects it.
		forged := ownedEvent(t, alice, roomID, typ, bob.id+"_dev")
		ctx := context.Background()
		res, err := alice.hs.Federation.Client().SendTransaction(ctx, gomatrixserverlib.Transaction{
			TransactionID: "owned-forged", Origin: serverName(alice.hs), Destination: serverName(bob.hs),
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{forged.JSON()},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := res.PDUs[forged.EventID()]; !ok {
			t.Fatalf("no result for the forged event: %+v", res.PDUs)
		}
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(forged.EventID()), nil), http.StatusNotFound, "M_NOT_FOUND")
		seen(bob, bob.id+"_dev", 1)
		// A later event of hers still gets through.
		put(alice, alice.id+"_dev2", 6)
		seen(bob, alice.id+"_dev2", 6)
		seen(bob, bob.id+"_dev", 1)
	})
}

// ownedEvent builds, on u's server and signed by it, u's state event of
// typ with key on top of the room's head there, with the auth events the
// rules ask for.
func ownedEvent(t *testing.T, u fedUser, roomID, typ, key string) gomatrixserverlib.PDU {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	var state []map[string]any
	if err := json.Unmarshal(r.Body, &state); err != nil {
		t.Fatal(err)
	}
	var auth []string
	for _, ev := range state {
		switch {
		case ev["type"] == "m.room.create", ev["type"] == "m.room.power_levels",
			ev["type"] == "m.room.member" && ev["state_key"] == u.id:
			auth = append(auth, ev["event_id"].(string))
		}
	}
	r = u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	chunk, _ := r.JSON["chunk"].([]any)
	if len(chunk) != 1 {
		t.Fatalf("no latest event: %s", r.Body)
	}
	prev := chunk[0].(map[string]any)["event_id"].(string)
	content, _ := json.Marshal(map[string]any{"n": 99})
	ver := gomatrixserverlib.MustGetRoomVersion("org.matrix.msc3757.10")
	proto := gomatrixserverlib.ProtoEvent{SenderID: u.id, RoomID: roomID, Type: typ, StateKey: &key,
		Content: content, PrevEvents: []string{prev}, AuthEvents: auth, Depth: 100}
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(u.hs), u.hs.Key.ID, u.hs.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}
