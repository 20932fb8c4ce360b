package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestSearch(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "private_chat"})
		var ids []string
		for i := 0; i < 15; i++ {
			ids = append(ids, alice.send(t, roomID, fmt.Sprintf("Message number %d", i)).JSON["event_id"].(string))
		}
		alice.send(t, roomID, "something else")
		search := func(u user, term, nextBatch string, extra map[string]any) hearthtest.Response {
			re := map[string]any{"search_term": term, "keys": []string{"content.body"}, "order_by": "recent",
				"filter": map[string]any{"limit": 10}}
			for k, v := range extra {
				re[k] = v
			}
			path := "/_matrix/client/v3/search"
			if nextBatch != "" {
				path += "?next_batch=" + url.QueryEscape(nextBatch)
			}
			r := u.do(t, "POST", path, map[string]any{"search_categories": map[string]any{"room_events": re}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r
		}
		re := func(r hearthtest.Response) map[string]any {
			return r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)
		}
		// Words match at their start, in any order; newest first; pages of 10.
		r1 := re(search(alice, "Message", "", nil))
		if r1["count"] != float64(15) || len(r1["results"].([]any)) != 10 {
			t.Fatalf("first page: %v", r1)
		}
		first := r1["results"].([]any)[0].(map[string]any)["result"].(map[string]any)
		if first["event_id"] != ids[14] {
			t.Fatalf("newest first: got %v", first["event_id"])
		}
		r2 := re(search(alice, "Message", r1["next_batch"].(string), nil))
		if len(r2["results"].([]any)) != 5 {
			t.Fatalf("second page: %v", r2)
		}
		if _, more := r2["next_batch"]; more {
			t.Fatalf("a page that is not full has a next_batch")
		}
		if r := re(search(alice, "number 7", "", nil)); r["count"] != float64(1) {
			t.Fatalf("two words: %v", r)
		}
		if r := re(search(alice, "mess", "", nil)); r["count"] != float64(15) {
			t.Fatalf("prefix: %v", r)
		}
		// Context around a result.
		r := re(search(alice, "number 7", "", map[string]any{"event_context": map[string]any{"before_limit": 2, "after_limit": 2}}))
		ctx := r["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
		if len(ctx["events_before"].([]any)) != 2 || len(ctx["events_after"].([]any)) != 2 {
			t.Fatalf("context: %v", ctx)
		}
		// Redacted events and rooms one is not in are not searched.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+url.PathEscape(ids[3])+"/red1", map[string]any{}), http.StatusOK, "")
		if r := re(search(alice, "Message", "", map[string]any{"filter": map[string]any{"limit": 50}})); r["count"] != float64(14) {
			t.Fatalf("after a redaction: %v", r["count"])
		}
		if r := re(search(bob, "Message", "", nil)); r["count"] != float64(0) {
			t.Fatalf("bob, not in the room, finds %v", r["count"])
		}
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
			"room_events": map[string]any{"search_term": "x", "keys": []string{"content.bogus"}}}}), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// searchBody is a /search request for room_events with the given fields.
func searchBody(term string, extra map[string]any) map[string]any {
	re := map[string]any{"search_term": term}
	for k, v := range extra {
		re[k] = v
	}
	return map[string]any{"search_categories": map[string]any{"room_events": re}}
}

// searchOK runs a search that must succeed and returns room_events.
func searchOK(t *testing.T, u user, nextBatch string, body map[string]any) map[string]any {
	t.Helper()
	path := "/_matrix/client/v3/search"
	if nextBatch != "" {
		path += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	r := u.do(t, "POST", path, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)
}

// resultIDs lists the event IDs of a room_events answer's results.
func resultIDs(re map[string]any) []string {
	out := []string{}
	for _, r := range re["results"].([]any) {
		out = append(out, r.(map[string]any)["result"].(map[string]any)["event_id"].(string))
	}
	return out
}

func TestSearchFullText(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomA := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		roomB := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomA, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.member(t, roomB, "join", nil), http.StatusOK, "")
		sendID := func(u user, roomID, body string) string {
			t.Helper()
			r := u.send(t, roomID, body)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["event_id"].(string)
		}

		t.Run("ranking", func(t *testing.T) {
			twice := sendID(alice, roomA, "apple apple pie")
			once := sendID(alice, roomA, "apple pie crust")
			re := searchOK(t, alice, "", searchBody("apple", map[string]any{"order_by": "rank"}))
			if ids := resultIDs(re); len(ids) != 2 || ids[0] != twice || ids[1] != once {
				t.Fatalf("rank order: %v, want [%s %s]", ids, twice, once)
			}
			rs := re["results"].([]any)
			if r0, r1 := rs[0].(map[string]any)["rank"].(float64), rs[1].(map[string]any)["rank"].(float64); !(r0 > r1) {
				t.Fatalf("ranks %v, %v", r0, r1)
			}
			// The default order is rank; recent puts the newer first.
			if ids := resultIDs(searchOK(t, alice, "", searchBody("apple", nil))); len(ids) != 2 || ids[0] != twice {
				t.Fatalf("default order: %v", ids)
			}
			if ids := resultIDs(searchOK(t, alice, "", searchBody("apple", map[string]any{"order_by": "recent"}))); len(ids) != 2 || ids[0] != once {
				t.Fatalf("recent order: %v", ids)
			}
		})

		t.Run("paging", func(t *testing.T) {
			var want []string
			for i := 0; i < 25; i++ {
				body := fmt.Sprintf("pager item %d", i)
				if i%3 == 0 {
					body = fmt.Sprintf("pager pager item %d", i) // varied ranks
				}
				want = append(want, sendID(alice, []string{roomA, roomB}[i%2], body))
			}
			for _, order := range []string{"rank", "recent"} {
				seen := map[string]bool{}
				var sizes []int
				nb := ""
				for page := 0; page < 5; page++ {
					re := searchOK(t, alice, nb, searchBody("pager", map[string]any{"order_by": order, "filter": map[string]any{"limit": 10}}))
					if re["count"] != float64(25) {
						t.Fatalf("%s: count %v", order, re["count"])
					}
					ids := resultIDs(re)
					sizes = append(sizes, len(ids))
					for _, id := range ids {
						if seen[id] {
							t.Fatalf("%s: %s on two pages", order, id)
						}
						seen[id] = true
					}
					// A new match arriving between pages changes nothing
					// already paged (recent: it is newer than the cursor).
					if page == 0 && order == "recent" {
						sendID(alice, roomA, "unrelated words")
					}
					next, ok := re["next_batch"].(string)
					if !ok {
						break
					}
					nb = next
				}
				if fmt.Sprint(sizes) != "[10 10 5]" || len(seen) != 25 {
					t.Fatalf("%s: page sizes %v, %d distinct", order, sizes, len(seen))
				}
				for _, id := range want {
					if !seen[id] {
						t.Fatalf("%s: %s never returned", order, id)
					}
				}
			}
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search?next_batch=bogus", searchBody("pager", nil)), http.StatusBadRequest, "M_INVALID_PARAM")
			for _, c := range []struct{ order, token string }{{"rank", "t5_1"}, {"recent", "r1_5_1"}, {"recent", "t5"}, {"rank", "r1_5"}, {"rank", "r1_5_1"},
				{"rank", "rNaN_5_0_9_1"}, {"rank", "r1_x_0_9_1"}, {"rank", "r1_5_-1_9_1"}, {"rank", "r1_5_9_3_1"}, {"recent", "t5_-1"}, {"recent", "t%_1"}} {
				hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search?next_batch="+url.QueryEscape(c.token),
					searchBody("pager", map[string]any{"order_by": c.order})), http.StatusBadRequest, "M_INVALID_PARAM")
			}
		})

		t.Run("filter", func(t *testing.T) {
			a := sendID(alice, roomA, "filtered kiwi")
			bb := sendID(bob, roomB, "filtered kiwi too")
			check := func(f map[string]any, want ...string) {
				t.Helper()
				ids := resultIDs(searchOK(t, alice, "", searchBody("kiwi", map[string]any{"order_by": "recent", "filter": f})))
				if fmt.Sprint(ids) != fmt.Sprint(want) {
					t.Fatalf("filter %v: %v, want %v", f, ids, want)
				}
			}
			check(map[string]any{}, bb, a)
			check(map[string]any{"rooms": []string{roomA}}, a)
			check(map[string]any{"not_rooms": []string{roomA}}, bb)
			check(map[string]any{"senders": []string{bob.id}}, bb)
			check(map[string]any{"not_senders": []string{bob.id}}, a)
			check(map[string]any{"types": []string{"m.room.topic"}})
			check(map[string]any{"limit": 1}, bb)
			// keys: the topic, not messages.
			alice.putState(t, roomA, "m.room.topic", "", map[string]any{"topic": "kiwi orchard"})
			ids := resultIDs(searchOK(t, alice, "", searchBody("kiwi", map[string]any{"keys": []string{"content.topic"}})))
			if len(ids) != 1 {
				t.Fatalf("keys content.topic: %v", ids)
			}
		})

		t.Run("visibility", func(t *testing.T) {
			room := alice.createRoom(t, map[string]any{"preset": "public_chat", "initial_state": []map[string]any{
				{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": "joined"}}}})
			sendID(alice, room, "zebra before bob joined")
			hearthtest.Expect(t, bob.member(t, room, "join", nil), http.StatusOK, "")
			during := sendID(alice, room, "zebra while bob is in")
			hearthtest.Expect(t, bob.member(t, room, "leave", nil), http.StatusOK, "")
			sendID(alice, room, "zebra after bob left")
			if ids := resultIDs(searchOK(t, bob, "", searchBody("zebra", nil))); fmt.Sprint(ids) != fmt.Sprint([]string{during}) {
				t.Fatalf("bob sees %v, want only %s", ids, during)
			}
			if ids := resultIDs(searchOK(t, alice, "", searchBody("zebra", nil))); len(ids) != 3 {
				t.Fatalf("alice sees %v", ids)
			}
			// Paging through matches bob may not see still ends.
			for i := 0; i < 30; i++ {
				sendID(alice, room, "zebra again")
			}
			re := searchOK(t, bob, "", searchBody("zebra", map[string]any{"filter": map[string]any{"limit": 1}}))
			if ids := resultIDs(re); fmt.Sprint(ids) != fmt.Sprint([]string{during}) {
				t.Fatalf("bob's first page: %v", ids)
			}
			if nb, ok := re["next_batch"].(string); ok {
				if ids := resultIDs(searchOK(t, bob, nb, searchBody("zebra", map[string]any{"filter": map[string]any{"limit": 1}}))); len(ids) != 0 {
					t.Fatalf("bob's second page: %v", ids)
				}
			}
		})

		t.Run("redaction", func(t *testing.T) {
			id := sendID(alice, roomA, "walnut secret")
			if ids := resultIDs(searchOK(t, alice, "", searchBody("walnut", nil))); len(ids) != 1 {
				t.Fatalf("before redaction: %v", ids)
			}
			hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomA+"/redact/"+url.PathEscape(id)+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
			re := searchOK(t, alice, "", searchBody("walnut", nil))
			if ids := resultIDs(re); len(ids) != 0 || re["count"] != float64(0) {
				t.Fatalf("after redaction: %v", re)
			}
		})

		t.Run("special characters", func(t *testing.T) {
			pct := sendID(alice, roomA, "quince 50% off")
			other := sendID(alice, roomA, "quince 500 boxes")
			ab := sendID(alice, roomA, "quince a_b")
			ba := sendID(alice, roomA, "quince b then a")
			quoted := sendID(alice, roomA, `quince said "quoted" here`)
			star := sendID(alice, roomA, "quince foobar")
			x := sendID(alice, roomA, "quince x marks")
			all := []string{pct, other, ab, ba, quoted, star, x}
			cases := []struct {
				term string
				want []string
			}{
				{"quince 50%", []string{pct, other}}, // % is not a wildcard: the word 50 (a prefix of 500)
				{"quince 500%", []string{other}},
				{"quince a_b", []string{ab}}, // _ is not a wildcard, and a_b is the phrase "a b"
				{`quince "quoted"`, []string{quoted}},
				{`quince "quoted`, []string{quoted}},
				{"quince foo*", []string{star}},
				{"quince -x", []string{x}}, // not a negation
				{"quince (", all},
				{"(", nil},
				{"quince AND OR NOT NEAR(x)", nil},
				{"quince x:marks", []string{x}}, // the phrase "x marks", not a column filter
				{"quince x marks", []string{x}},
				{`quince ' \ ; -- /* */ {} [] ^ ~ & | ! < > @ #`, all}, // pieces without words are left out
				{"", nil},
			}
			for _, c := range cases {
				re := searchOK(t, alice, "", searchBody(c.term, map[string]any{"order_by": "recent", "filter": map[string]any{"rooms": []string{roomA}}}))
				got := map[string]bool{}
				for _, id := range resultIDs(re) {
					got[id] = true
				}
				if len(got) != len(c.want) {
					t.Fatalf("%q: got %v, want %v", c.term, resultIDs(re), c.want)
				}
				for _, id := range c.want {
					if !got[id] {
						t.Fatalf("%q: got %v, want %v", c.term, resultIDs(re), c.want)
					}
				}
			}
		})

		t.Run("groupings and highlights", func(t *testing.T) {
			a1 := sendID(alice, roomA, "Mangosteen season")
			a2 := sendID(bob, roomA, "mangosteens are ripe")
			b1 := sendID(bob, roomB, "MANGOSTEEN!")
			re := searchOK(t, alice, "", searchBody("mangosteen", map[string]any{"order_by": "recent",
				"groupings": map[string]any{"group_by": []map[string]any{{"key": "room_id"}, {"key": "sender"}}}}))
			groups := re["groups"].(map[string]any)
			byRoom, bySender := groups["room_id"].(map[string]any), groups["sender"].(map[string]any)
			ga, gb := byRoom[roomA].(map[string]any), byRoom[roomB].(map[string]any)
			if fmt.Sprint(ga["results"]) != fmt.Sprint([]any{a2, a1}) || fmt.Sprint(gb["results"]) != fmt.Sprint([]any{b1}) {
				t.Fatalf("room groups: %v", byRoom)
			}
			if gb["order"] != float64(1) || ga["order"] != float64(2) {
				t.Fatalf("room group order: %v", byRoom)
			}
			if fmt.Sprint(bySender[bob.id].(map[string]any)["results"]) != fmt.Sprint([]any{b1, a2}) ||
				fmt.Sprint(bySender[alice.id].(map[string]any)["results"]) != fmt.Sprint([]any{a1}) {
				t.Fatalf("sender groups: %v", bySender)
			}
			hl := map[string]bool{}
			for _, h := range re["highlights"].([]any) {
				hl[h.(string)] = true
			}
			if !hl["mangosteen"] || !hl["mangosteens"] || hl["season"] {
				t.Fatalf("highlights: %v", re["highlights"])
			}
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", searchBody("x", map[string]any{
				"groupings": map[string]any{"group_by": []map[string]any{{"key": "type"}}}})), http.StatusBadRequest, "M_INVALID_PARAM")
		})

		t.Run("event context and state", func(t *testing.T) {
			hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.id)+"/displayname", map[string]any{"displayname": "Alice A"}), http.StatusOK, "")
			before := sendID(alice, roomB, "context one")
			hit := sendID(alice, roomB, "context durian")
			after := sendID(bob, roomB, "context three")
			re := searchOK(t, alice, "", searchBody("durian", map[string]any{"include_state": true,
				"event_context": map[string]any{"before_limit": 1, "after_limit": 1, "include_profile": true}}))
			if ids := resultIDs(re); fmt.Sprint(ids) != fmt.Sprint([]string{hit}) {
				t.Fatalf("results %v", ids)
			}
			ctx := re["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
			if fmt.Sprint(eventIDs(ctx["events_before"])) != fmt.Sprint([]string{before}) || fmt.Sprint(eventIDs(ctx["events_after"])) != fmt.Sprint([]string{after}) {
				t.Fatalf("context: %v", ctx)
			}
			if ctx["start"] == nil || ctx["end"] == nil {
				t.Fatalf("context tokens: %v", ctx)
			}
			profiles := ctx["profile_info"].(map[string]any)
			if p, ok := profiles[alice.id].(map[string]any); !ok || p["displayname"] != "Alice A" {
				t.Fatalf("profile_info: %v", profiles)
			}
			if _, ok := profiles[bob.id]; !ok {
				t.Fatalf("profile_info lacks bob: %v", profiles)
			}
			state := re["state"].(map[string]any)[roomB].([]any)
			types := map[string]bool{}
			for _, s := range state {
				types[s.(map[string]any)["type"].(string)] = true
			}
			if !types["m.room.create"] || !types["m.room.member"] {
				t.Fatalf("state: %v", types)
			}
		})

		t.Run("bad input", func(t *testing.T) {
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{"room_events": map[string]any{}}}), http.StatusBadRequest, "M_MISSING_PARAM")
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", searchBody("x", map[string]any{"order_by": "best"})), http.StatusBadRequest, "M_INVALID_PARAM")
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", searchBody(strings.Repeat("w ", 100), nil)), http.StatusBadRequest, "M_INVALID_PARAM")
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", searchBody("x", map[string]any{"filter": "nope"})), http.StatusBadRequest, "M_BAD_JSON")
		})
	})
}
