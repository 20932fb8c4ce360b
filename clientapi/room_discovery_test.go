package clientapi_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestTimestampToEvent(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, eve := newUser(t, hs, "alice"), newUser(t, hs, "eve")
		roomID := alice.createRoom(t, nil)
		first := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "one"})
		time.Sleep(20 * time.Millisecond)
		between := time.Now().UnixMilli()
		time.Sleep(20 * time.Millisecond)
		second := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "two"})
		base := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/timestamp_to_event"
		ts := strconv.FormatInt(between, 10)

		r := alice.do(t, "GET", base+"?dir=b&ts="+ts, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["event_id"] != first || r.JSON["origin_server_ts"] == nil {
			t.Fatalf("backwards: %s", r.Body)
		}
		if r = alice.do(t, "GET", base+"?dir=f&ts="+ts, nil); r.JSON["event_id"] != second {
			t.Fatalf("forwards: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "GET", base+"?dir=f&ts="+strconv.FormatInt(time.Now().UnixMilli()+60000, 10), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?dir=x&ts="+ts, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?dir=f&ts=soon", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?dir=f", nil), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, eve.do(t, "GET", base+"?dir=f&ts="+ts, nil), http.StatusForbidden, "M_FORBIDDEN")
		// Unknown rooms answer like rooms one may not see, as /messages does.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v1/rooms/!nope:hearth.test/timestamp_to_event?dir=f&ts=1", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestRoomSummary(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		space := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Space", "room_alias_name": "space",
			"creation_content": map[string]any{"type": "m.space"}})
		restricted := alice.createRoom(t, map[string]any{"room_version": "8", "initial_state": []any{map[string]any{
			"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "restricted",
				"allow": []any{map[string]any{"type": "m.room_membership", "room_id": space}}}}}})
		private := alice.createRoom(t, map[string]any{"preset": "private_chat", "name": "Secret"})
		sum := "/_matrix/client/v1/room_summary/"

		r := alice.do(t, "GET", sum+url.PathEscape("#space:hearth.test"), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["room_id"] != space || r.JSON["room_type"] != "m.space" || r.JSON["name"] != "Space" || r.JSON["membership"] != "join" ||
			r.JSON["num_joined_members"] != float64(1) || r.JSON["join_rule"] != "public" || r.JSON["room_version"] == nil {
			t.Fatalf("space summary: %s", r.Body)
		}
		if _, ok := r.JSON["allowed_room_ids"]; ok {
			t.Errorf("allowed_room_ids on a public room: %s", r.Body)
		}
		// Anonymous callers see public rooms only, without membership.
		r = hs.Do(t, "GET", sum+url.PathEscape(space), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["membership"]; ok {
			t.Errorf("membership for an anonymous caller: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", sum+url.PathEscape(private), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		// Bob: not in the restricted room's allowed space yet.
		hearthtest.Expect(t, bob.do(t, "GET", sum+url.PathEscape(restricted), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, bob.member(t, space, "join", nil), http.StatusOK, "")
		r = bob.do(t, "GET", sum+url.PathEscape(restricted), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if ids, _ := r.JSON["allowed_room_ids"].([]any); len(ids) != 1 || ids[0] != space || r.JSON["membership"] != "leave" {
			t.Fatalf("restricted summary: %s", r.Body)
		}
		hearthtest.Expect(t, bob.do(t, "GET", sum+url.PathEscape(private), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.member(t, private, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		if r = bob.do(t, "GET", sum+url.PathEscape(private), nil); r.JSON["membership"] != "invite" || r.JSON["name"] != "Secret" {
			t.Fatalf("invited summary: %s", r.Body)
		}
		hearthtest.Expect(t, bob.do(t, "GET", sum+url.PathEscape("!nope:hearth.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, bob.do(t, "GET", sum+url.PathEscape("#nope:hearth.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, bob.do(t, "GET", sum+"nonsense", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestSpaceHierarchy(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		space := func(name, preset string) string {
			return alice.createRoom(t, map[string]any{"preset": preset, "name": name, "creation_content": map[string]any{"type": "m.space"}})
		}
		room := func(name, preset string) string {
			return alice.createRoom(t, map[string]any{"preset": preset, "name": name})
		}
		root := space("Root", "public_chat")
		r1 := room("R1", "public_chat")
		ss1 := space("SS1", "public_chat")
		r2 := room("R2", "private_chat")
		r3 := room("R3", "public_chat")
		link := func(parent, child string, extra map[string]any) {
			content := map[string]any{"via": []string{"hearth.test"}}
			for k, v := range extra {
				content[k] = v
			}
			alice.putState(t, parent, "m.space.child", child, content)
			time.Sleep(2 * time.Millisecond) // distinct origin_server_ts
		}
		link(root, r1, map[string]any{"suggested": true})
		link(root, ss1, nil)
		link(root, r2, nil)
		link(ss1, r3, nil)
		link(r1, r3, nil)                                                               // r1 is not a space: not followed
		alice.putState(t, root, "m.space.child", "!gone:hearth.test", map[string]any{}) // no via: not a child
		link(root, "!remote:elsewhere.test", nil)                                       // unknown room: skipped
		base := "/_matrix/client/v1/rooms/" + url.PathEscape(root) + "/hierarchy"
		ids := func(r hearthtest.Response) []string { return roomIDsOf(r.JSON["rooms"]) }

		r := alice.do(t, "GET", base, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if got := ids(r); !sameStrings(got, []string{root, r1, ss1, r3, r2}) {
			t.Fatalf("whole tree, depth first: %v", got)
		}
		rootEntry := r.JSON["rooms"].([]any)[0]
		children := path(rootEntry, "children_state").([]any)
		if len(children) != 4 || path(children[0], "state_key") != r1 || path(children[0], "origin_server_ts") == nil || path(children[0], "type") != "m.space.child" {
			t.Fatalf("root children_state: %v", children)
		}
		if got := path(r.JSON["rooms"].([]any)[1], "children_state").([]any); len(got) != 0 {
			t.Fatalf("a room that is not a space has children_state: %v", got)
		}
		if r = alice.do(t, "GET", base+"?max_depth=0", nil); !sameStrings(ids(r), []string{root}) {
			t.Fatalf("max_depth=0: %v", ids(r))
		}
		if r = alice.do(t, "GET", base+"?suggested_only=true", nil); !sameStrings(ids(r), []string{root, r1}) {
			t.Fatalf("suggested_only: %v", ids(r))
		}
		r = alice.do(t, "GET", base+"?limit=2", nil)
		if !sameStrings(ids(r), []string{root, r1}) {
			t.Fatalf("first page: %v", ids(r))
		}
		next := r.JSON["next_batch"].(string)
		if r = alice.do(t, "GET", base+"?limit=2&from="+url.QueryEscape(next), nil); !sameStrings(ids(r), []string{ss1, r3}) {
			t.Fatalf("second page: %v", ids(r))
		}
		hearthtest.Expect(t, alice.do(t, "GET", base+"?from="+url.QueryEscape(next)+"&max_depth=1", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?from=zz", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?limit=0", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?max_depth=-1", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?suggested_only=yes", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v1/rooms/!nope:hearth.test/hierarchy", nil), http.StatusForbidden, "M_FORBIDDEN")

		// Bob sees what is public, and invite-only rooms once invited.
		if r = bob.do(t, "GET", base, nil); !sameStrings(ids(r), []string{root, r1, ss1, r3}) {
			t.Fatalf("bob: %v", ids(r))
		}
		hearthtest.Expect(t, alice.member(t, r2, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		if r = bob.do(t, "GET", base, nil); !sameStrings(ids(r), []string{root, r1, ss1, r3, r2}) {
			t.Fatalf("bob invited: %v", ids(r))
		}
		hidden := space("Hidden", "private_chat")
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(hidden)+"/hierarchy", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}
