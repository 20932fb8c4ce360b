package federation_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// keysOf lists "type|state_key" of each event.
func keysOf(evs gomatrixserverlib.EventJSONs) []string {
	var out []string
	for _, e := range evs {
		out = append(out, gjson.GetBytes(e, "type").Str+"|"+gjson.GetBytes(e, "state_key").Str)
	}
	slices.Sort(out)
	return out
}

// The resident side of a partial-state join (MSC3706): send_join with
// omit_members=true leaves out the member events but the heroes', leaves
// out of auth_chain what state holds, and names the servers in the room
// before the join; anything but true or false is M_INVALID_PARAM.
func TestSendJoinOmitMembers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bsrv := fed[0], fed[1]
		alice, bob := newFedUser(t, bsrv, "alice"), newFedUser(t, bsrv, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		// Six more members: heroes are five of them, by user ID.
		var others []string
		for _, n := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
			u := newFedUser(t, bsrv, n)
			hearthtest.Expect(t, u.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
			others = append(others, u.id)
		}

		ctx := context.Background()
		client := a.Federation.Client()
		charlie := "@charlie:" + a.Config.ServerName
		mj, err := client.MakeJoin(ctx, serverName(a), serverName(bsrv), roomID, charlie)
		if err != nil {
			t.Fatal(err)
		}
		ver := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion)
		join, err := ver.NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			t.Fatal(err)
		}

		// A bad value is refused before anything is stored.
		path := "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID())
		hearthtest.Expect(t, signedPut(t, a, bsrv, path+"?omit_members=yes", join), http.StatusBadRequest, "M_INVALID_PARAM")

		res, err := client.SendJoinPartialState(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		if !res.MembersOmitted {
			t.Fatal("members_omitted is false")
		}
		all := append([]string{alice.id, bob.id}, others...)
		slices.Sort(all)
		want := []string{"m.room.create|", "m.room.history_visibility|", "m.room.join_rules|", "m.room.power_levels|"}
		for _, u := range all[:5] {
			want = append(want, "m.room.member|"+u)
		}
		slices.Sort(want)
		if got := keysOf(res.StateEvents); !slices.Equal(got, want) {
			t.Fatalf("state = %q, want %q", got, want)
		}
		// Everything the state and join need is in the state already.
		if got := keysOf(res.AuthEvents); len(got) != 0 {
			t.Fatalf("auth_chain = %q, want it empty", got)
		}
		if !slices.Equal(res.ServersInRoom, []string{bsrv.Config.ServerName}) {
			t.Fatalf("servers_in_room = %q, want only %s", res.ServersInRoom, bsrv.Config.ServerName)
		}

		// A named room has no heroes: only the joining user's own
		// membership (here: none) stays. The full answer still holds all.
		named := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Named"})
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(named), map[string]any{}), http.StatusOK, "")
		mj, err = client.MakeJoin(ctx, serverName(a), serverName(bsrv), named, charlie)
		if err != nil {
			t.Fatal(err)
		}
		join, err = ver.NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			t.Fatal(err)
		}
		res, err = client.SendJoinPartialState(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keysOf(res.StateEvents) {
			if strings.HasPrefix(k, "m.room.member|") {
				t.Fatalf("a named room's partial state holds %s", k)
			}
		}
		// The creator's join is the power levels' auth event: it comes in
		// the auth chain instead.
		if got := keysOf(res.AuthEvents); !slices.Equal(got, []string{"m.room.member|" + alice.id}) {
			t.Fatalf("auth_chain = %q, want alice's join", got)
		}
		full, err := client.SendJoin(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		if full.MembersOmitted || !slices.Contains(keysOf(full.StateEvents), "m.room.member|"+bob.id) {
			t.Fatalf("the full answer: members_omitted %v, state %q", full.MembersOmitted, keysOf(full.StateEvents))
		}
	})
}

const lazyFilter = `{"room":{"state":{"lazy_load_members":true},"timeline":{"lazy_load_members":true}}}`

// syncOnce syncs u once (timeout 0) with filter (may be "").
func (u fedUser) syncOnce(t *testing.T, filter string) hearthtest.Response {
	t.Helper()
	path := "/_matrix/client/v3/sync?timeout=0"
	if filter != "" {
		path += "&filter=" + url.QueryEscape(filter)
	}
	r := u.do(t, "GET", path, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r
}

// A partial-state join between two Hearth servers (MSC3902): the joining
// server asks for omit_members, the room is usable at once (send, receive,
// lazy-loading sync) while eager syncs leave it out and /members waits;
// the resync, held back by the resident, survives a restart of the
// joining server and completes the room: all members in the current
// state, /members answers, eager syncs show the room with its state.
func TestPartialStateJoinBetweenHearths(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bsrv := fed[0], fed[1]
		alice := newFedUser(t, bsrv, "alice")
		// Named: no heroes, so every member of B is left out.
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Big room"})
		members := []string{alice.id}
		for _, n := range []string{"bob", "dan", "erin"} {
			u := newFedUser(t, bsrv, n)
			hearthtest.Expect(t, u.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
			members = append(members, u.id)
		}

		// State the join's auth rules do not read, which the joining
		// server checks itself (rooms.partialAnswer): kept, except the one
		// whose signature B's answer spoils.
		for _, k := range []string{"good", "bad"} {
			hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.space.child/"+k,
				map[string]any{"via": []string{"example.org"}}), http.StatusOK, "")
		}
		// State left for the resync (rooms.deferredState): absent until
		// the room is complete, then in every sync.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/org.example.thing/x",
			map[string]any{"k": "x"}), http.StatusOK, "")
		deferred := storage.StateKey{Type: "org.example.thing", StateKey: "x"}

		// B holds state_ids (the resync) until released.
		release := make(chan struct{})
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
		var asked atomic.Int32
		bsrv.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if strings.Contains(req.URL.Path, "/send_join/") {
					rec := httptest.NewRecorder()
					fedH.ServeHTTP(rec, req)
					body := rec.Body.Bytes()
					for i, ev := range gjson.GetBytes(body, "state").Array() {
						if ev.Get("type").Str == "m.space.child" && ev.Get("state_key").Str == "bad" {
							var err error
							body, err = sjson.SetBytes(body, fmt.Sprintf("state.%d.signatures", i),
								map[string]any{bsrv.Config.ServerName: map[string]string{string(bsrv.Key.ID): strings.Repeat("A", 86)}})
							if err != nil {
								t.Error(err)
							}
						}
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(rec.Code)
					_, _ = w.Write(body)
					return
				}
				if strings.Contains(req.URL.Path, "/state_ids/") {
					asked.Add(1)
					select {
					case <-release:
					case <-req.Context().Done():
						return
					}
				}
				fedH.ServeHTTP(w, req)
			})
		})

		charlie := newFedUser(t, a, "charlie")
		joinVia(t, charlie, roomID, alice)
		ctx := context.Background()
		if partial, err := a.Rooms.IsPartialState(ctx, roomID); err != nil || !partial {
			t.Fatalf("after the join: partial %v, %v", partial, err)
		}
		cur, err := a.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cur[storage.StateKey{Type: "m.room.member", StateKey: "@bob:" + bsrv.Config.ServerName}]; ok {
			t.Fatal("the partial state holds bob's membership")
		}
		if _, ok := cur[storage.StateKey{Type: "m.space.child", StateKey: "good"}]; !ok {
			t.Fatal("the partial state lacks a state event of the answer")
		}
		if _, ok := cur[storage.StateKey{Type: "m.space.child", StateKey: "bad"}]; ok {
			t.Fatal("the partial state holds a state event with a bad signature")
		}
		if _, ok := cur[deferred]; ok {
			t.Fatal("the partial state holds state left for the resync")
		}

		// Usable at once: both ways.
		charlie.send(t, roomID, "from the partial room")
		alice.waitForMessage(t, roomID, "from the partial room")
		alice.send(t, roomID, "to the partial room")
		since := ""
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(string(charlie.syncOnce(t, lazyFilter).Body), "to the partial room") {
			if time.Now().After(deadline) {
				t.Fatal("charlie's lazy-loading sync never showed alice's message")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if r := charlie.syncOnce(t, ""); roomIn(r, "join", roomID) {
			t.Fatal("an eager sync showed the partial-state room")
		}
		// The membership of alice came with her event (its auth events).
		if r := charlie.syncOnce(t, lazyFilter); !strings.Contains(string(r.Body), `"state_key":"`+alice.id+`"`) {
			t.Fatalf("the lazy-loading sync lacks the sender's membership: %s", r.Body)
		}
		eager := charlie.syncOnce(t, "")
		since, _ = eager.JSON["next_batch"].(string)
		lazySince, _ := charlie.syncOnce(t, lazyFilter).JSON["next_batch"].(string)
		// A sliding sync connection has the room while partial.
		slidingPath := "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
		slidingBody := map[string]any{"lists": map[string]any{"all": map[string]any{
			"ranges": [][]int{{0, 10}}, "required_state": [][]string{{"*", "*"}}, "timeline_limit": 1}}}
		sr := charlie.do(t, "POST", slidingPath, slidingBody)
		hearthtest.Expect(t, sr, http.StatusOK, "")
		if !gjson.GetBytes(sr.Body, "rooms."+gjson.Escape(roomID)).Exists() {
			t.Fatalf("the sliding sync lacks the partial-state room: %s", sr.Body)
		}
		slidingPos := gjson.GetBytes(sr.Body, "pos").Str

		// Meanwhile A gives no state of the room and takes no join or
		// knock through it: it could answer neither in full.
		get := func(path string) hearthtest.Response {
			return signedGet(t, bsrv, a, path, bsrv.Key.ID, bsrv.Key.Private, serverName(a))
		}
		cur, err = a.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		createID := cur[storage.StateKey{Type: "m.room.create"}]
		hearthtest.Expect(t, get("/_matrix/federation/v1/state_ids/"+url.PathEscape(roomID)+"?event_id="+url.QueryEscape(createID)), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, get("/_matrix/federation/v1/state/"+url.PathEscape(roomID)+"?event_id="+url.QueryEscape(createID)), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, get("/_matrix/federation/v1/make_join/"+url.PathEscape(roomID)+"/"+url.PathEscape("@zed:"+bsrv.Config.ServerName)+"?ver=11"), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, get("/_matrix/federation/v1/make_knock/"+url.PathEscape(roomID)+"/"+url.PathEscape("@zed:"+bsrv.Config.ServerName)+"?ver=11"), http.StatusNotFound, "M_NOT_FOUND")

		// Killed mid-resync: the resync resumes on start.
		for asked.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("the resync never asked for state_ids")
			}
			time.Sleep(50 * time.Millisecond)
		}
		a.Restart(t)
		if partial, err := a.Rooms.IsPartialState(ctx, roomID); err != nil || !partial {
			t.Fatalf("after the restart: partial %v, %v", partial, err)
		}
		// /members, and the state the partial state lacks, wait for the
		// resync (MSC3902).
		answered, deferredAnswered := make(chan hearthtest.Response, 1), make(chan hearthtest.Response, 1)
		go func() {
			answered <- a.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/members", charlie.token, nil)
		}()
		go func() {
			deferredAnswered <- a.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/org.example.thing/x", charlie.token, nil)
		}()
		select {
		case r := <-answered:
			t.Fatalf("/members answered during the resync: %d %s", r.Status, r.Body)
		case r := <-deferredAnswered:
			t.Fatalf("/state of state left for the resync answered during the resync: %d %s", r.Status, r.Body)
		case <-time.After(300 * time.Millisecond):
		}
		releaseOnce.Do(func() { close(release) })
		var r hearthtest.Response
		select {
		case r = <-answered:
		case <-time.After(20 * time.Second):
			t.Fatal("/members never answered after the resync")
		}
		hearthtest.Expect(t, r, http.StatusOK, "")
		select {
		case dr := <-deferredAnswered:
			hearthtest.Expect(t, dr, http.StatusOK, "")
			if gjson.GetBytes(dr.Body, "k").Str != "x" {
				t.Fatalf("/state of the deferred state: %s", dr.Body)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("/state of the deferred state never answered after the resync")
		}
		for _, m := range append(members, charlie.id) {
			if !strings.Contains(string(r.Body), `"state_key":"`+m+`"`) {
				t.Errorf("/members lacks %s: %s", m, r.Body)
			}
		}
		if partial, err := a.Rooms.IsPartialState(ctx, roomID); err != nil || partial {
			t.Fatalf("after the resync: partial %v, %v", partial, err)
		}
		cur, err = a.Rooms.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range append(members, charlie.id) {
			if _, ok := cur[storage.StateKey{Type: "m.room.member", StateKey: m}]; !ok {
				t.Errorf("the complete state lacks %s", m)
			}
		}
		if _, ok := cur[deferred]; !ok {
			t.Error("the complete state lacks the state left for the resync")
		}
		// The eager sync that left the room out now shows it, whole.
		r = charlie.syncUntil(t, &since, "the resynced room", func(r hearthtest.Response) bool { return roomIn(r, "join", roomID) })
		if !strings.Contains(string(r.Body), `"state_key":"@bob:`+bsrv.Config.ServerName+`"`) {
			t.Fatalf("the eager sync after the resync lacks bob's membership: %s", r.Body)
		}
		if !strings.Contains(string(r.Body), `"type":"org.example.thing"`) {
			t.Fatalf("the eager sync after the resync lacks the state left for the resync: %s", r.Body)
		}
		// A lazy-loading sync, which had the room all along, gets the
		// state the resync brought.
		hasDeferred := func(body []byte) bool {
			for _, ev := range gjson.GetBytes(body, "rooms.join."+gjson.Escape(roomID)+".state.events").Array() {
				if ev.Get("type").Str == deferred.Type && ev.Get("state_key").Str == deferred.StateKey {
					return true
				}
			}
			return false
		}
		for lazyDeadline := time.Now().Add(15 * time.Second); ; {
			lr := charlie.do(t, "GET", "/_matrix/client/v3/sync?timeout=1000&filter="+url.QueryEscape(lazyFilter)+"&since="+url.QueryEscape(lazySince), nil)
			hearthtest.Expect(t, lr, http.StatusOK, "")
			if hasDeferred(lr.Body) {
				break
			}
			lazySince = gjson.GetBytes(lr.Body, "next_batch").Str
			if time.Now().After(lazyDeadline) {
				t.Fatal("the lazy-loading sync never showed the state left for the resync")
			}
		}
		// The sliding sync connection gets the room again in full.
		for slidingDeadline := time.Now().Add(15 * time.Second); ; {
			sr := charlie.do(t, "POST", slidingPath+"?timeout=1000&pos="+url.QueryEscape(slidingPos), slidingBody)
			hearthtest.Expect(t, sr, http.StatusOK, "")
			room := gjson.GetBytes(sr.Body, "rooms."+gjson.Escape(roomID))
			if room.Get("initial").Bool() && strings.Contains(room.Get("required_state").Raw, `"org.example.thing"`) {
				break
			}
			slidingPos = gjson.GetBytes(sr.Body, "pos").Str
			if time.Now().After(slidingDeadline) {
				t.Fatalf("the sliding sync never sent the resynced room again in full: %s", sr.Body)
			}
		}
		// And the room goes on.
		alice.send(t, roomID, "after the resync")
		charlie.waitForMessage(t, roomID, "after the resync")
	})
}
