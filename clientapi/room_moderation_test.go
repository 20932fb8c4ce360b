package clientapi_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

func TestReports(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, eve := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "eve")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		ev := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "rude"})
		report := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/report/"

		hearthtest.Expect(t, bob.do(t, "POST", report+url.PathEscape(ev), map[string]any{"reason": "rude", "score": -100}), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "POST", report+url.PathEscape(ev), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "POST", report+url.PathEscape(ev), map[string]any{"score": 5}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, bob.do(t, "POST", report+url.PathEscape(ev), map[string]any{"score": "bad"}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, bob.do(t, "POST", report+"$nope", map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, eve.do(t, "POST", report+url.PathEscape(ev), map[string]any{}), http.StatusNotFound, "M_NOT_FOUND") // not joined
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/!nope:hearth.test/report/"+url.PathEscape(ev), map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		// Rooms: anyone may report one that exists.
		hearthtest.Expect(t, eve.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/report", map[string]any{"reason": ""}), http.StatusOK, "")
		hearthtest.Expect(t, eve.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/report", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, eve.do(t, "POST", "/_matrix/client/v3/rooms/!nope:hearth.test/report", map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")

		reports, err := storage.ReportsOfRoom(context.Background(), hs.DB.Read(), roomID)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 3 || *reports[0].EventID != ev || *reports[0].Reason != "rude" || *reports[0].Score != -100 ||
			reports[0].Reporter != bob.id || reports[2].EventID != nil || reports[2].Reporter != eve.id {
			t.Fatalf("stored reports: %+v", reports)
		}
	})
}

// TestReportUser: POST /users/{userId}/report (v1.14) needs no shared
// room, a reason (it may be blank) and, for a local user, one that exists.
func TestReportUser(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, eve := newUser(t, hs, "alice"), newUser(t, hs, "eve")
		report := func(userID string) string { return "/_matrix/client/v3/users/" + url.PathEscape(userID) + "/report" }

		// Eve shares no room with Alice and still may report her.
		hearthtest.Expect(t, alice.do(t, "POST", report(eve.id), map[string]any{"reason": "spam"}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", report(eve.id), map[string]any{"reason": ""}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", report(eve.id), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, alice.do(t, "POST", report("@nobody:hearth.test"), map[string]any{"reason": "x"}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "POST", report("not-a-user"), map[string]any{"reason": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
		// A remote user cannot be checked here: the report is kept.
		hearthtest.Expect(t, alice.do(t, "POST", report("@spammer:elsewhere.test"), map[string]any{"reason": "x"}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", report(eve.id), "", map[string]any{"reason": "x"}), http.StatusUnauthorized, "M_MISSING_TOKEN")
		// v1.14 endpoint: no r0 alias.
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/r0/users/"+url.PathEscape(eve.id)+"/report", map[string]any{"reason": "x"}), http.StatusNotFound, "M_UNRECOGNIZED")

		reports, err := storage.ReportsOfUser(context.Background(), hs.DB.Read(), eve.id)
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 2 || reports[0].Reporter != alice.id || reports[0].Reason != "spam" || reports[1].Reason != "" {
			t.Fatalf("stored user reports: %+v", reports)
		}
	})
}

func TestUserDirectoryAndMutualRooms(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol, dave := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol"), newUser(t, hs, "dave")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+alice.id+"/displayname", map[string]any{"displayname": "Alice Liddell"}), http.StatusOK, "")
		public := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		private := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		hearthtest.Expect(t, bob.member(t, private, "invite", map[string]any{"user_id": carol.id}), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, private, "join", nil), http.StatusOK, "")
		// A per-room name must not leak into the directory.
		carol.putState(t, private, "m.room.member", carol.id, map[string]any{"membership": "join", "displayname": "Secret Name"})
		search := func(u user, term string, limit any) hearthtest.Response {
			body := map[string]any{"search_term": term}
			if limit != nil {
				body["limit"] = limit
			}
			r := u.do(t, "POST", "/_matrix/client/v3/user_directory/search", body)
			return r
		}
		users := func(r hearthtest.Response) []string {
			var out []string
			for _, x := range r.JSON["results"].([]any) {
				out = append(out, x.(map[string]any)["user_id"].(string))
			}
			return out
		}
		r := search(dave, "LIDDELL", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if got := users(r); !sameStrings(got, []string{alice.id}) || path(r.JSON["results"].([]any)[0], "display_name") != "Alice Liddell" || r.JSON["limited"] != false {
			t.Fatalf("dave finds alice in a public room: %s", r.Body)
		}
		if got := users(search(dave, "@alice", nil)); !sameStrings(got, []string{alice.id}) {
			t.Fatalf("by user ID: %v", got)
		}
		if got := users(search(dave, "carol", nil)); len(got) != 0 {
			t.Fatalf("dave shares no room with carol: %v", got)
		}
		if got := users(search(bob, "carol", nil)); !sameStrings(got, []string{carol.id}) {
			t.Fatalf("bob shares a room with carol: %v", got)
		}
		if got := users(search(bob, "bob", nil)); len(got) != 0 {
			t.Fatalf("sharing a private room with oneself does not make the caller a result: %v", got)
		}
		if got := users(search(bob, "Secret", nil)); len(got) != 0 {
			t.Fatalf("per-room name leaked: %v", got)
		}
		hearthtest.Expect(t, bob.member(t, public, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, public, "join", nil), http.StatusOK, "")
		// A member of a public room is found by everyone, the caller too.
		if got := users(search(bob, "bob", nil)); !sameStrings(got, []string{bob.id}) {
			t.Fatalf("bob, in a public room, finds himself: %v", got)
		}
		// So are the members of a world-readable room that is not public.
		erin := newUser(t, hs, "erin")
		if got := users(search(dave, "erin", nil)); len(got) != 0 {
			t.Fatalf("erin is in no room: %v", got)
		}
		erin.createRoom(t, map[string]any{"preset": "private_chat",
			"initial_state": []any{map[string]any{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "world_readable"}}}})
		if got := users(search(dave, "erin", nil)); !sameStrings(got, []string{erin.id}) {
			t.Fatalf("dave finds erin in a world-readable room: %v", got)
		}
		r = search(dave, "hearth.test", 2)
		if got := users(r); len(got) != 2 || r.JSON["limited"] != true {
			t.Fatalf("limit: %s", r.Body)
		}
		hearthtest.Expect(t, dave.do(t, "POST", "/_matrix/client/v3/user_directory/search", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, search(dave, "x", -1), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, search(dave, "x", "ten"), http.StatusBadRequest, "M_BAD_JSON")

		// Mutual rooms.
		mutual := func(u user, q string) hearthtest.Response {
			return u.do(t, "GET", "/_matrix/client/v1/mutual_rooms?"+q, nil)
		}
		r = mutual(bob, "user_id="+url.QueryEscape(carol.id))
		hearthtest.Expect(t, r, http.StatusOK, "")
		got, _ := r.JSON["joined"].([]any)
		if len(got) != 2 || r.JSON["count"] != float64(2) {
			t.Fatalf("bob and carol share two rooms: %s", r.Body)
		}
		if r = mutual(dave, "user_id="+url.QueryEscape(carol.id)); r.JSON["count"] != float64(0) {
			t.Fatalf("dave and carol share none: %s", r.Body)
		}
		hearthtest.Expect(t, mutual(bob, ""), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, mutual(bob, "user_id=carol"), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, mutual(bob, "user_id="+url.QueryEscape(bob.id)), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestIgnoredUsers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/user/"+alice.id+"/account_data/m.ignored_user_list",
			map[string]any{"ignored_users": map[string]any{bob.id: map[string]any{}}}), http.StatusOK, "")
		s := alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
		since := s.JSON["next_batch"].(string)
		hearthtest.Expect(t, alice.send(t, roomID, "from alice"), http.StatusOK, "")
		hidden := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "from bob"})
		topic := bob.putState(t, roomID, "m.room.member", bob.id, map[string]any{"membership": "join", "displayname": "Bobby"})
		shown := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "to carol"})

		r := alice.messages(t, roomID, "dir=b&limit=50")
		got := map[string]bool{}
		for _, id := range eventIDs(r.JSON["chunk"]) {
			got[id] = true
		}
		if got[hidden] || got[shown] || !got[topic] {
			t.Fatalf("/messages: ignored messages must go, state must stay: %s", r.Body)
		}
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(topic)+"?limit=10", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		for _, id := range append(eventIDs(r.JSON["events_before"]), eventIDs(r.JSON["events_after"])...) {
			if id == hidden || id == shown {
				t.Fatalf("/context shows an ignored user's message: %s", r.Body)
			}
		}
		// Carol does not ignore bob.
		r = carol.messages(t, roomID, "dir=b&limit=50")
		if ids := eventIDs(r.JSON["chunk"]); len(ids) == 0 || ids[0] != shown {
			t.Fatalf("carol's /messages: %v", ids)
		}
		// Sync: the topic change arrives, bob's messages do not, nor his invites.
		bobRoom := bob.createRoom(t, map[string]any{"invite": []string{alice.id}})
		carolRoom := carol.createRoom(t, map[string]any{"invite": []string{alice.id}})
		r = alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), nil)
		tl := eventIDs(path(r.JSON, "rooms", "join", roomID, "timeline", "events"))
		sawTopic := false
		for _, id := range tl {
			if id == hidden || id == shown {
				t.Fatalf("sync timeline shows an ignored user's message: %v", tl)
			}
			sawTopic = sawTopic || id == topic
		}
		if !sawTopic {
			t.Fatalf("sync timeline lost an ignored user's state event: %v", tl)
		}
		if path(r.JSON, "rooms", "invite", bobRoom) != nil || path(r.JSON, "rooms", "invite", carolRoom) == nil {
			t.Fatalf("invites: %v", path(r.JSON, "rooms", "invite"))
		}
	})
}

func TestRestrictedAndKnockJoins(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		space := alice.createRoom(t, map[string]any{"preset": "public_chat", "creation_content": map[string]any{"type": "m.space"}})
		for _, rule := range []string{"restricted", "knock_restricted"} {
			t.Run(rule, func(t *testing.T) {
				roomID := alice.createRoom(t, map[string]any{"room_version": "10", "initial_state": []any{map[string]any{
					"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": rule,
						"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}}}}})
				// Carol is in no allowed room.
				hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
				// Bob joins the space, then the room: authorised by alice.
				hearthtest.Expect(t, bob.member(t, space, "join", nil), http.StatusOK, "")
				hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
				r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(bob.id), nil)
				if r.JSON["join_authorised_via_users_server"] != alice.id || r.JSON["membership"] != "join" {
					t.Fatalf("bob's join: %s", r.Body)
				}
				hearthtest.Expect(t, bob.member(t, space, "leave", nil), http.StatusOK, "")
				if rule == "knock_restricted" {
					// Carol knocks instead; alice lets her in.
					hearthtest.Expect(t, carol.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID), map[string]any{"reason": "please"}), http.StatusOK, "")
					hearthtest.Expect(t, alice.member(t, roomID, "invite", map[string]any{"user_id": carol.id}), http.StatusOK, "")
					hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
				}
			})
		}
		// Knock → invite → join in a knock room; the knock appears in the knocker's sync.
		knockRoom := alice.createRoom(t, map[string]any{"room_version": "7", "initial_state": []any{map[string]any{
			"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		dave := newUser(t, hs, "dave")
		hearthtest.Expect(t, dave.member(t, knockRoom, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, dave.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(knockRoom), map[string]any{}), http.StatusOK, "")
		r := dave.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
		if path(r.JSON, "rooms", "knock", knockRoom) == nil {
			t.Fatalf("knock not in sync: %s", r.Body)
		}
		hearthtest.Expect(t, alice.member(t, knockRoom, "invite", map[string]any{"user_id": dave.id}), http.StatusOK, "")
		hearthtest.Expect(t, dave.member(t, knockRoom, "join", nil), http.StatusOK, "")
		// Knocking is refused where the room version or join rule does not allow it.
		old := alice.createRoom(t, map[string]any{"room_version": "6", "preset": "private_chat"})
		hearthtest.Expect(t, carol.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(old), map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	})
}
