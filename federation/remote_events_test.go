package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// TestRemoteEventsWithBadAuthEvents: an event whose auth events include a
// rejected one is rejected too, also when that auth event arrives later as
// a fetched outlier (auth rules, "Considering the event's auth_events");
// so is an event whose auth events its sender cannot produce.
func TestRemoteEventsWithBadAuthEvents(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		ctx := context.Background()
		roomID, bobTok := createRoom(t, bs, "bob", map[string]any{"preset": "public_chat", "room_version": "11"})
		mallory, malloryTok := a.RegisterUser(t, "mallory")
		r := a.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bs.Config.ServerName), malloryTok, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")

		st, err := bs.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		create, pl := st[storage.StateKey{Type: spec.MRoomCreate}], st[storage.StateKey{Type: spec.MRoomPowerLevels}]
		joinRules, join := st[storage.StateKey{Type: spec.MRoomJoinRules}], st[storage.StateKey{Type: spec.MRoomMember, StateKey: mallory}]
		joinEv, err := bs.Rooms.Event(ctx, join)
		if err != nil {
			t.Fatalf("mallory's join on B: %v", err)
		}
		ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
		build := func(typ string, stateKey *string, content map[string]any, auth, prev []string, depth int64) gomatrixserverlib.PDU {
			t.Helper()
			c, _ := json.Marshal(content)
			proto := gomatrixserverlib.ProtoEvent{SenderID: mallory, RoomID: roomID, Type: typ, StateKey: stateKey,
				Content: c, PrevEvents: prev, AuthEvents: auth, Depth: depth}
			ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		empty := ""
		depth := joinEv.PDU.Depth()
		// Mallory (power 0) makes herself an admin: rejected.
		badPL := build(spec.MRoomPowerLevels, &empty, map[string]any{"users": map[string]int{mallory: 100}},
			[]string{create, pl, join}, []string{join}, depth+1)
		// An outlier that leans on it, and a message that leans on the
		// outlier; and a message whose auth event nobody can produce.
		outlier := build(spec.MRoomMember, &mallory, map[string]any{"membership": "join", "displayname": "poisoned"},
			[]string{create, joinRules, badPL.EventID(), join}, []string{badPL.EventID()}, depth+2)
		poisoned := build("m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "poisoned"},
			[]string{create, pl, outlier.EventID()}, []string{join}, depth+1)
		ghost := build(spec.MRoomMember, &mallory, map[string]any{"membership": "join", "displayname": "ghost"},
			[]string{create, joinRules, pl, join}, []string{join}, depth+1)
		orphan := build("m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "orphan"},
			[]string{create, pl, ghost.EventID()}, []string{join}, depth+1)

		// A answers /event for the outlier as the sender of these events
		// would; the ghost it has never heard of.
		a.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/event/"+outlier.EventID()) {
					_ = json.NewEncoder(w).Encode(map[string]any{"origin": string(serverName(a)),
						"origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{outlier.JSON()}})
					return
				}
				fedH.ServeHTTP(w, r)
			})
		})
		send := func(txnID string, pdus ...gomatrixserverlib.PDU) fclient.RespSend {
			t.Helper()
			var raw []json.RawMessage
			for _, p := range pdus {
				raw = append(raw, p.JSON())
			}
			res, err := a.Federation.Client().SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: gomatrixserverlib.TransactionID(txnID),
				Origin: serverName(a), Destination: serverName(bs), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: raw})
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		// Rejected events are handled (stored, never shown): no error goes
		// back for them; the 404s below show they were rejected.
		if res := send("bad-pl", badPL); res.PDUs[badPL.EventID()].Error != "" {
			t.Fatalf("result for the power levels change: %+v", res.PDUs)
		}
		res := send("leaning", poisoned, orphan)
		if res.PDUs[poisoned.EventID()].Error != "" || res.PDUs[orphan.EventID()].Error != "" {
			t.Errorf("results: %+v", res.PDUs)
		}
		// Mallory's power is unchanged: the rejected power levels did not
		// take.
		r = bs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels/", bobTok, nil)
		if users, _ := r.JSON["users"].(map[string]any); users[mallory] != nil {
			t.Errorf("the rejected power levels took effect: %s", r.Body)
		}
		for _, id := range []string{badPL.EventID(), poisoned.EventID(), orphan.EventID()} {
			hearthtest.Expect(t, bs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(id), bobTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		}
	})
}

// TestRemoteForkAfterOutlierFetch: an event is fetched as another event's
// auth event and kept as an outlier; a later event names it as its prev
// event and get_missing_events brings it back as a timeline event on a fork.
// Resolving the fork must use the event as now stored, not the outlier
// (regression: a cached outlier had no state, so the resolved state lost
// the sender and the later event was soft-failed).
func TestRemoteForkAfterOutlierFetch(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		ctx := context.Background()
		// Version 12: state resolution v2.1 starts from an empty state, so
		// a fork resolved from a wrong (empty) state loses charlie.
		roomID, bobTok := createRoom(t, bs, "bob", map[string]any{"preset": "public_chat", "room_version": "12"})
		charlie, charlieTok := a.RegisterUser(t, "charlie")
		r := a.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bs.Config.ServerName), charlieTok, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		st, err := bs.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		join := st[storage.StateKey{Type: spec.MRoomMember, StateKey: charlie}]
		joinEv, err := bs.Rooms.Event(ctx, join)
		if err != nil {
			t.Fatalf("charlie's join on B: %v", err)
		}
		// Bob closes the room and talks on, so charlie's events below fork
		// from an older point, where the room was public.
		r = bs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.join_rules/", bobTok, map[string]any{"join_rule": "invite"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = bs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1", bobTok, map[string]any{"msgtype": "m.text", "body": "hi"})
		hearthtest.Expect(t, r, http.StatusOK, "")

		ver, err := bs.Rooms.Version(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		// (In version 12 the create event is not an auth event.)
		auth := []string{st[storage.StateKey{Type: spec.MRoomPowerLevels}], st[storage.StateKey{Type: spec.MRoomJoinRules}]}
		// Origin timestamps a second apart: state resolution orders the
		// two renames by them, and "two" must win.
		now := time.Now()
		rename := func(name string, prev string, depth int64) gomatrixserverlib.PDU {
			t.Helper()
			c, _ := json.Marshal(map[string]any{"membership": "join", "displayname": name})
			proto := gomatrixserverlib.ProtoEvent{SenderID: charlie, RoomID: roomID, Type: spec.MRoomMember, StateKey: &charlie,
				Content: c, PrevEvents: []string{prev}, AuthEvents: append(append([]string{}, auth...), prev), Depth: depth}
			ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(now.Add(time.Duration(depth)*time.Second), serverName(a), a.Key.ID, a.Key.Private)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		one := rename("one", join, joinEv.PDU.Depth()+1)
		two := rename("two", one.EventID(), joinEv.PDU.Depth()+2)
		a.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasSuffix(r.URL.Path, "/event/"+one.EventID()):
					_ = json.NewEncoder(w).Encode(map[string]any{"origin": string(serverName(a)),
						"origin_server_ts": time.Now().UnixMilli(), "pdus": []json.RawMessage{one.JSON()}})
				case strings.Contains(r.URL.Path, "/get_missing_events/"):
					_ = json.NewEncoder(w).Encode(map[string]any{"events": []json.RawMessage{one.JSON()}})
				default:
					fedH.ServeHTTP(w, r)
				}
			})
		})
		// First a message of charlie's that cites "one" as its auth event:
		// B fetches "one" and keeps it as an outlier.
		c, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "hello"})
		proto := gomatrixserverlib.ProtoEvent{SenderID: charlie, RoomID: roomID, Type: "m.room.message",
			Content: c, PrevEvents: []string{join}, AuthEvents: append(append([]string{}, auth...), one.EventID()), Depth: joinEv.PDU.Depth() + 1}
		hello, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(now, serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			t.Fatal(err)
		}
		for i, ev := range []gomatrixserverlib.PDU{hello, two} {
			res, err := a.Federation.Client().SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: gomatrixserverlib.TransactionID(fmt.Sprint("fork", i)),
				Origin: serverName(a), Destination: serverName(bs), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{ev.JSON()}})
			if err != nil || res.PDUs[ev.EventID()].Error != "" {
				t.Fatalf("send: %v %+v", err, res.PDUs)
			}
		}
		r = bs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(charlie), bobTok, nil)
		if r.JSON["displayname"] != "two" {
			t.Fatalf("charlie's membership after the fork: %s", r.Body)
		}
		r = bs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(two.EventID()), bobTok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
	})
}
