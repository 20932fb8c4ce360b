package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestRoomTags covers the tags module: tags set, ordered and removed one
// by one, visible in GET .../tags and in sync as m.tag room account data,
// only to their owner.
func TestRoomTags(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, nil)
		tags := "/_matrix/client/v3/user/" + url.PathEscape(alice.id) + "/rooms/" + url.PathEscape(roomID) + "/tags"
		r := alice.do(t, "GET", tags, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if got, ok := r.JSON["tags"].(map[string]any); !ok || len(got) != 0 {
			t.Fatalf("no tags yet: %s", r.Body)
		}
		since, _ := alice.sync(t, "", "").JSON["next_batch"].(string)
		hearthtest.Expect(t, alice.do(t, "PUT", tags+"/m.favourite", map[string]any{"order": 0.25}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", tags+"/u.work", map[string]any{}), http.StatusOK, "")
		r = alice.do(t, "GET", tags, nil)
		if jsonPath(r.JSON, "tags", "m.favourite", "order") != 0.25 || jsonPath(r.JSON, "tags", "u.work") == nil {
			t.Fatalf("after setting: %s", r.Body)
		}
		got := accountDataTypes(joinedRoom(t, alice.sync(t, since, ""), roomID))
		if jsonPath(got["m.tag"], "tags", "m.favourite", "order") != 0.25 {
			t.Fatalf("sync's m.tag: %v", got)
		}
		hearthtest.Expect(t, alice.do(t, "DELETE", tags+"/m.favourite", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "DELETE", tags+"/m.absent", nil), http.StatusOK, "")
		r = alice.do(t, "GET", tags, nil)
		if m, _ := r.JSON["tags"].(map[string]any); len(m) != 1 || m["u.work"] == nil {
			t.Fatalf("after removing: %s", r.Body)
		}

		hearthtest.Expect(t, alice.do(t, "PUT", tags+"/m.lowpriority", map[string]any{"order": "high"}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, alice.do(t, "PUT", tags+"/"+strings.Repeat("t", 256), map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "PUT", tags+"/u.x", `[1]`), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, bob.do(t, "GET", tags, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "PUT", tags+"/u.evil", map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	})
}
