package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func globalDataPath(userID, typ string) string {
	return "/_matrix/client/v3/user/" + url.PathEscape(userID) + "/account_data/" + url.PathEscape(typ)
}

func roomDataPath(userID, roomID, typ string) string {
	return "/_matrix/client/v3/user/" + url.PathEscape(userID) + "/rooms/" + url.PathEscape(roomID) + "/account_data/" + url.PathEscape(typ)
}

func TestAccountData(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, aliceTok := hs.RegisterUser(t, "alice")
		bob, bobTok := hs.RegisterUser(t, "bob")
		const room = "!room:hearth.test"

		hearthtest.Expect(t, hs.Do(t, "GET", globalDataPath(alice, "org.example.cfg"), aliceTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		for _, v := range []string{"first", "second"} {
			hearthtest.Expect(t, hs.Do(t, "PUT", globalDataPath(alice, "org.example.cfg"), aliceTok, map[string]any{"value": v}), http.StatusOK, "")
			r := hs.Do(t, "GET", globalDataPath(alice, "org.example.cfg"), aliceTok, nil)
			if r.Status != http.StatusOK || r.JSON["value"] != v {
				t.Fatalf("global account data after setting %q: %d %s", v, r.Status, r.Body)
			}
		}
		// Room data is separate from global data of the same type: no fallback.
		hearthtest.Expect(t, hs.Do(t, "GET", roomDataPath(alice, room, "org.example.cfg"), aliceTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "PUT", roomDataPath(alice, room, "org.example.cfg"), aliceTok, map[string]any{"value": "room"}), http.StatusOK, "")
		if r := hs.Do(t, "GET", roomDataPath(alice, room, "org.example.cfg"), aliceTok, nil); r.JSON["value"] != "room" {
			t.Fatalf("room account data: %s", r.Body)
		}
		if r := hs.Do(t, "GET", globalDataPath(alice, "org.example.cfg"), aliceTok, nil); r.JSON["value"] != "second" {
			t.Fatalf("room data overwrote global data: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", roomDataPath(alice, "!other:hearth.test", "org.example.cfg"), aliceTok, nil), http.StatusNotFound, "M_NOT_FOUND")

		// Another user's data is off limits, both ways.
		hearthtest.Expect(t, hs.Do(t, "GET", globalDataPath(alice, "org.example.cfg"), bobTok, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "PUT", globalDataPath(alice, "org.example.cfg"), bobTok, map[string]any{"value": "evil"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "GET", roomDataPath(alice, room, "org.example.cfg"), bobTok, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "PUT", roomDataPath(alice, room, "org.example.cfg"), bobTok, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "GET", globalDataPath(bob, "org.example.cfg"), bobTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", globalDataPath(alice, "org.example.cfg"), "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// Server-managed types cannot be set, globally or per room: 405 M_BAD_JSON.
		for _, typ := range []string{"m.fully_read", "m.push_rules"} {
			hearthtest.Expect(t, hs.Do(t, "PUT", globalDataPath(alice, typ), aliceTok, map[string]any{}), http.StatusMethodNotAllowed, "M_BAD_JSON")
			hearthtest.Expect(t, hs.Do(t, "PUT", roomDataPath(alice, room, typ), aliceTok, map[string]any{}), http.StatusMethodNotAllowed, "M_BAD_JSON")
		}
		// ... but m.push_rules reads as normal: the rendered rules.
		r := hs.Do(t, "GET", globalDataPath(alice, "m.push_rules"), aliceTok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if g, _ := r.JSON["global"].(map[string]any); g["override"] == nil {
			t.Fatalf("m.push_rules account data: %s", r.Body)
		}

		// Bad bodies and room IDs.
		hearthtest.Expect(t, hs.Do(t, "PUT", globalDataPath(alice, "org.example.cfg"), aliceTok, `["not", "an object"]`), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", globalDataPath(alice, "org.example.cfg"), aliceTok, `{broken`), http.StatusBadRequest, "M_NOT_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", roomDataPath(alice, "@notaroom:hearth.test", "org.example.cfg"), aliceTok, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", roomDataPath(alice, "@notaroom:hearth.test", "org.example.cfg"), aliceTok, nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// Every change takes a new, higher stream position, and AccountDataSince
// returns exactly what changed after a position: what sync will read.
func TestAccountDataStream(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, aliceTok := hs.RegisterUser(t, "alice")
		bob, bobTok := hs.RegisterUser(t, "bob")
		ctx := t.Context()

		put := func(user, tok, path string) {
			t.Helper()
			hearthtest.Expect(t, hs.Do(t, "PUT", path, tok, map[string]any{"k": "v"}), http.StatusOK, "")
		}
		put(alice, aliceTok, globalDataPath(alice, "a.one"))
		put(alice, aliceTok, globalDataPath(alice, "a.two"))
		put(bob, bobTok, globalDataPath(bob, "b.one"))
		all, err := hs.DB.AccountDataSince(ctx, alice, 0)
		if err != nil || len(all) != 2 || all[0].Type != "a.one" || all[1].Type != "a.two" || all[0].StreamPos >= all[1].StreamPos {
			t.Fatalf("alice's account data: %+v %v", all, err)
		}
		mark, err := hs.DB.MaxAccountDataPos(ctx)
		if err != nil || mark < all[1].StreamPos {
			t.Fatalf("max position %d (%v) is behind %d", mark, err, all[1].StreamPos)
		}

		// Rewriting a.one moves it past a.two; a room entry and a push rule
		// change follow.
		put(alice, aliceTok, globalDataPath(alice, "a.one"))
		put(alice, aliceTok, roomDataPath(alice, "!r:hearth.test", "a.room"))
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape("!r:hearth.test"), aliceTok,
			map[string]any{"actions": []any{}}), http.StatusOK, "")
		changed, err := hs.DB.AccountDataSince(ctx, alice, mark)
		if err != nil || len(changed) != 3 {
			t.Fatalf("changes since %d: %+v %v", mark, changed, err)
		}
		if changed[0].Type != "a.one" || changed[1].RoomID != "!r:hearth.test" || changed[2].Type != "m.push_rules" {
			t.Fatalf("changes in the wrong order: %+v", changed)
		}
		for i := 1; i < len(changed); i++ {
			if changed[i].StreamPos <= changed[i-1].StreamPos || changed[0].StreamPos <= mark {
				t.Fatalf("positions do not increase: %+v", changed)
			}
		}
		if all, _ := hs.DB.AccountDataSince(ctx, alice, 0); len(all) != 4 {
			t.Fatalf("a rewrite must replace the entry, not add one: %+v", all)
		}
	})
}

// accountDataTypes lists the types in a sync section's account_data events,
// with their content.
func accountDataTypes(section any) map[string]any {
	out := map[string]any{}
	evs, _ := path(section, "account_data", "events").([]any)
	for _, e := range evs {
		ev := e.(map[string]any)
		out[ev["type"].(string)] = ev["content"]
	}
	return out
}

// TestAccountDataDeletion covers MSC3391 (DELETE, or PUT of {}): the entry
// reads as 404, an incremental sync carries it with empty content, an
// initial sync leaves it out; and MSC3890: a device's local notification
// settings go when the device is logged out.
func TestAccountDataDeletion(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, nil)
		const typ = "org.example.cfg"
		unstable := "/_matrix/client/unstable/org.matrix.msc3391/user/" + url.PathEscape(alice.id)
		for _, tc := range []struct {
			name, get, del string
			viaPut         bool
			section        func(hearthtest.Response) any
		}{
			{"global DELETE", globalDataPath(alice.id, typ), unstable + "/account_data/" + typ, false,
				func(r hearthtest.Response) any { return r.JSON }},
			{"room PUT {}", roomDataPath(alice.id, roomID, typ), "", true,
				func(r hearthtest.Response) any { return joinedRoom(t, r, roomID) }},
			{"room DELETE", roomDataPath(alice.id, roomID, typ), unstable + "/rooms/" + url.PathEscape(roomID) + "/account_data/" + typ, false,
				func(r hearthtest.Response) any { return joinedRoom(t, r, roomID) }},
		} {
			hearthtest.Expect(t, alice.do(t, "PUT", tc.get, map[string]any{"v": 1}), http.StatusOK, "")
			since, _ := alice.sync(t, "", "").JSON["next_batch"].(string)
			if tc.viaPut {
				hearthtest.Expect(t, alice.do(t, "PUT", tc.get, map[string]any{}), http.StatusOK, "")
			} else {
				hearthtest.Expect(t, bob.do(t, "DELETE", tc.del, nil), http.StatusForbidden, "M_FORBIDDEN")
				hearthtest.Expect(t, alice.do(t, "DELETE", tc.del, nil), http.StatusOK, "")
			}
			hearthtest.Expect(t, alice.do(t, "GET", tc.get, nil), http.StatusNotFound, "M_NOT_FOUND")
			got := accountDataTypes(tc.section(alice.sync(t, since, "")))
			if c, ok := got[typ].(map[string]any); !ok || len(c) != 0 {
				t.Fatalf("%s: incremental sync must carry the deletion as {}: %v", tc.name, got)
			}
			if _, ok := accountDataTypes(tc.section(alice.sync(t, "", "")))[typ]; ok {
				t.Fatalf("%s: initial sync still shows deleted account data", tc.name)
			}
			// It can be set again.
			hearthtest.Expect(t, alice.do(t, "PUT", tc.get, map[string]any{"v": 2}), http.StatusOK, "")
			if r := alice.do(t, "GET", tc.get, nil); r.JSON["v"] != float64(2) {
				t.Fatalf("%s: set after delete: %s", tc.name, r.Body)
			}
		}
		hearthtest.Expect(t, alice.do(t, "DELETE", unstable+"/account_data/m.push_rules", nil), http.StatusMethodNotAllowed, "M_BAD_JSON")

		// MSC3890: logging a device out deletes its local notification settings.
		phone := alice.login(t, "alice")
		r := phone.do(t, "GET", "/_matrix/client/v3/account/whoami", nil)
		settings := globalDataPath(alice.id, "org.matrix.msc3890.local_notification_settings."+r.JSON["device_id"].(string))
		hearthtest.Expect(t, alice.do(t, "PUT", settings, map[string]any{"is_silenced": true}), http.StatusOK, "")
		hearthtest.Expect(t, phone.do(t, "POST", "/_matrix/client/v3/logout", map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", settings, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}
