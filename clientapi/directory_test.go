package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestRoomDirectory(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		big := alice.createRoom(t, map[string]any{"visibility": "public", "name": "Big room", "topic": "lots of people", "room_alias_name": "big"})
		small := alice.createRoom(t, map[string]any{"visibility": "public", "name": "Small room",
			"creation_content": map[string]any{"type": "m.space"}})
		private := alice.createRoom(t, map[string]any{"name": "Private"})
		hearthtest.Expect(t, bob.member(t, big, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, big, "join", nil), http.StatusOK, "")

		// Visibility of each room; no token needed.
		r := hs.Do(t, "GET", "/_matrix/client/v3/directory/list/room/"+big, "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["visibility"] != "public" {
			t.Fatalf("visibility of a public room: %s", r.Body)
		}
		if r = hs.Do(t, "GET", "/_matrix/client/v3/directory/list/room/"+private, "", nil); r.JSON["visibility"] != "private" {
			t.Fatalf("visibility of a private room: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/directory/list/room/!nope:hearth.test", "", nil), http.StatusNotFound, "M_NOT_FOUND")

		// Listing: largest first, with the directory fields.
		r = hs.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		chunk, _ := r.JSON["chunk"].([]any)
		if len(chunk) != 2 {
			t.Fatalf("publicRooms: %s", r.Body)
		}
		first := chunk[0].(map[string]any)
		if first["room_id"] != big || first["num_joined_members"] != float64(3) || first["name"] != "Big room" ||
			first["topic"] != "lots of people" || first["canonical_alias"] != "#big:hearth.test" || first["join_rule"] != "public" ||
			first["world_readable"] != false || first["guest_can_join"] != false {
			t.Fatalf("first public room: %v", first)
		}
		if second := chunk[1].(map[string]any); second["room_id"] != small || second["room_type"] != "m.space" {
			t.Fatalf("second public room: %v", second)
		}
		if r.JSON["total_room_count_estimate"] != float64(2) {
			t.Errorf("total_room_count_estimate: %s", r.Body)
		}

		// Pagination with limit and since.
		r = hs.Do(t, "GET", "/_matrix/client/v3/publicRooms?limit=1", "", nil)
		if ids := roomIDsOf(r.JSON["chunk"]); !sameStrings(ids, []string{big}) || r.JSON["next_batch"] == nil {
			t.Fatalf("first page: %s", r.Body)
		}
		r = hs.Do(t, "GET", "/_matrix/client/v3/publicRooms?limit=1&since="+r.JSON["next_batch"].(string), "", nil)
		if ids := roomIDsOf(r.JSON["chunk"]); !sameStrings(ids, []string{small}) || r.JSON["next_batch"] != nil || r.JSON["prev_batch"] == nil {
			t.Fatalf("second page: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/publicRooms?since=bogus", "", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/publicRooms?limit=x", "", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		// Another server, unreachable: 502.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/publicRooms?server=elsewhere.test", "", nil), http.StatusBadGateway, "M_UNKNOWN")

		// POST filters: search term, room types.
		r = bob.do(t, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"generic_search_term": "PEOPLE"}})
		if ids := roomIDsOf(r.JSON["chunk"]); !sameStrings(ids, []string{big}) {
			t.Fatalf("search term: %s", r.Body)
		}
		r = bob.do(t, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}})
		if ids := roomIDsOf(r.JSON["chunk"]); !sameStrings(ids, []string{small}) {
			t.Fatalf("room_types m.space: %s", r.Body)
		}
		r = bob.do(t, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"filter": map[string]any{"room_types": []any{nil}}, "include_all_networks": true})
		if ids := roomIDsOf(r.JSON["chunk"]); !sameStrings(ids, []string{big}) {
			t.Fatalf("room_types null: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/publicRooms", "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/publicRooms", map[string]any{"limit": "ten"}), http.StatusBadRequest, "M_BAD_JSON")

		// Changing visibility: the room's moderators only.
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/directory/list/room/"+big, map[string]any{"visibility": "private"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/directory/list/room/"+big, map[string]any{"visibility": "hidden"}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/directory/list/room/!nope:hearth.test", map[string]any{"visibility": "public"}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/directory/list/room/"+big, map[string]any{"visibility": "private"}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/directory/list/room/"+private, map[string]any{}), http.StatusOK, "") // defaults to public
		r = hs.Do(t, "GET", "/_matrix/client/v3/publicRooms", "", nil)
		if ids := roomIDsOf(r.JSON["chunk"]); len(ids) != 2 || ids[0] == big && ids[1] == big {
			t.Fatalf("after changes: %s", r.Body)
		}
		for _, id := range roomIDsOf(r.JSON["chunk"]) {
			if id == big {
				t.Fatalf("unpublished room still listed: %s", r.Body)
			}
		}
	})
}

func roomIDsOf(chunk any) []string {
	arr, _ := chunk.([]any)
	out := []string{}
	for _, c := range arr {
		id, _ := c.(map[string]any)["room_id"].(string)
		out = append(out, id)
	}
	return out
}
