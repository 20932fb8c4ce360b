package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func (u user) tryState(t *testing.T, roomID, evType, key string, content map[string]any) hearthtest.Response {
	t.Helper()
	return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType+"/"+url.PathEscape(key), content)
}

// Owned state (MSC3757) in rooms org.matrix.msc3757.10 and .11: a state
// key that starts with a user ID (alone, or followed by _ and anything)
// belongs to that user; others may set it only with a higher power level.
// In room version 10 a state key starting with @ is the sender's alone.
func TestOwnedState(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol, mod := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol"), newUser(t, hs, "mod")
		const typ = "com.example.test"
		const suffix = "_state_key_suffix:!@#$123"
		for _, ver := range []string{"org.matrix.msc3757.10", "org.matrix.msc3757.11"} {
			t.Run(ver, func(t *testing.T) {
				roomID := alice.createRoom(t, map[string]any{
					"room_version": ver, "preset": "public_chat",
					"power_level_content_override": map[string]any{"events": map[string]int{typ: 0}, "users": map[string]int{alice.id: 100, mod.id: 50}},
				})
				if got := stateContent(t, alice, roomID, "m.room.create", "")["room_version"]; got != ver {
					t.Fatalf("create event's room_version: %v", got)
				}
				for _, u := range []user{bob, carol, mod} {
					hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
				}
				ok := func(u user, key string, n int) {
					t.Helper()
					u.putState(t, roomID, typ, key, map[string]any{"n": n})
					if got := stateContent(t, alice, roomID, typ, key)["n"]; got != float64(n) {
						t.Errorf("state %q after %s set it: n=%v, want %d", key, u.id, got, n)
					}
				}
				refused := func(u user, key string, status int, errcode string) {
					t.Helper()
					hearthtest.Expect(t, u.tryState(t, roomID, typ, key, map[string]any{"n": -1}), status, errcode)
				}
				// The owner, with or without a suffix.
				ok(bob, bob.id, 1)
				ok(bob, bob.id+suffix, 2)
				ok(bob, bob.id+"_", 3)
				// Higher power levels over lower ones, and over non-members.
				ok(alice, bob.id, 4)
				ok(alice, bob.id+suffix, 5)
				ok(mod, bob.id+suffix, 6)
				ok(alice, mod.id+suffix, 7)
				ok(alice, "@notinroom:elsewhere.example", 8)
				ok(alice, "@notinroom:elsewhere.example:8448_x", 9)
				// Equal or lower power levels may not.
				refused(bob, carol.id, http.StatusForbidden, "M_FORBIDDEN")
				refused(bob, carol.id+suffix, http.StatusForbidden, "M_FORBIDDEN")
				refused(mod, alice.id+suffix, http.StatusForbidden, "M_FORBIDDEN")
				refused(bob, mod.id, http.StatusForbidden, "M_FORBIDDEN")
				// A suffix without its _ makes another (valid) user ID; a
				// user ID after a prefix is not the owner either.
				refused(bob, bob.id+suffix[1:], http.StatusForbidden, "M_FORBIDDEN")
				refused(bob, "@prefix_"+bob.id+suffix, http.StatusForbidden, "M_FORBIDDEN")
				// No valid user ID at the start: bad JSON, even for the creator.
				refused(alice, "@oops", http.StatusBadRequest, "M_BAD_JSON")
				refused(alice, alice.id+"@"+suffix[1:], http.StatusBadRequest, "M_BAD_JSON")
				refused(alice, "@x:bad host_suffix", http.StatusBadRequest, "M_BAD_JSON")
				// The rule does not let anyone past the other auth rules.
				outsider := newUser(t, hs, "outsider"+ver[len(ver)-2:])
				refused(outsider, outsider.id+suffix, http.StatusForbidden, "M_FORBIDDEN")
				ok(bob, "", 10) // not owned: the type's level (0) decides
				hearthtest.Expect(t, bob.tryState(t, roomID, "m.room.name", bob.id+suffix, map[string]any{"name": "x"}), http.StatusForbidden, "M_FORBIDDEN")
				// Membership keeps its own rules.
				hearthtest.Expect(t, alice.tryState(t, roomID, "m.room.member", bob.id+suffix, map[string]any{"membership": "join"}), http.StatusForbidden, "")
				// Refused writes changed nothing.
				hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+typ+"/"+url.PathEscape(carol.id+suffix), nil), http.StatusNotFound, "M_NOT_FOUND")
				if got := stateContent(t, alice, roomID, typ, bob.id+suffix)["n"]; got != float64(6) {
					t.Errorf("bob's key after refusals: %v", got)
				}
				// Redactions still work in both base versions.
				hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(bob.sendEvent(t, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "x"}))+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
			})
		}

		// Room version 10: only the exact sender may use a key starting with @.
		roomID := alice.createRoom(t, map[string]any{
			"room_version": "10", "preset": "public_chat",
			"power_level_content_override": map[string]any{"events": map[string]int{typ: 0}},
		})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		bob.putState(t, roomID, typ, bob.id, map[string]any{})
		for _, key := range []string{alice.id + suffix, bob.id, bob.id + suffix, "@notinroom:elsewhere.example", "@oops"} {
			hearthtest.Expect(t, alice.tryState(t, roomID, typ, key, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		}
	})
}
