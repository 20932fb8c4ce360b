package clientapi_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestDeactivateLeavesRooms: POST /account/deactivate takes the road the
// admin API takes: the user leaves the rooms they are joined to, their
// pending invite is rejected and their knock retracted (another member
// sees each leave in /sync), they leave the user directory, and with
// erase their profile (custom fields too) and account data are gone.
func TestDeactivateLeavesRooms(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		tok, _ := register(t, hs, "alice", "secret")
		alice := user{hs, "@alice:" + hs.Config.ServerName, tok}
		bob := newUser(t, hs, "bob")
		joined := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, alice.member(t, joined, "join", nil), http.StatusOK, "")
		invited := bob.createRoom(t, map[string]any{"invite": []string{alice.id}})
		knocked := bob.createRoom(t, map[string]any{"room_version": "7", "initial_state": []any{map[string]any{
			"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(knocked), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+alice.id+"/displayname", map[string]any{"displayname": "Alice"}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+alice.id+"/m.tz", map[string]any{"m.tz": "Europe/London"}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/account_data/org.example.notes", map[string]any{"a": 1}), http.StatusOK, "")
		search := func() []any {
			r := bob.do(t, "POST", "/_matrix/client/v3/user_directory/search", map[string]any{"search_term": "alice"})
			hearthtest.Expect(t, r, http.StatusOK, "")
			res, _ := r.JSON["results"].([]any)
			return res
		}
		if len(search()) != 1 {
			t.Fatal("alice is not in bob's user directory before deactivating")
		}
		since := bob.sync(t, "", "").JSON["next_batch"].(string)

		r := hs.Do(t, "POST", "/_matrix/client/v3/account/deactivate", tok, map[string]any{"auth": passwordAuth("alice", "secret"), "erase": true})
		hearthtest.Expect(t, r, http.StatusOK, "")
		// No identifier was bound to an identity server (there is no binding
		// here): the spec asks for success.
		if r.JSON["id_server_unbind_result"] != "success" {
			t.Errorf("deactivate response: %s", r.Body)
		}

		s := bob.sync(t, since, "timeout=5000")
		for name, roomID := range map[string]string{"joined": joined, "invited": invited, "knocked": knocked} {
			found := false
			events, _ := path(s.JSON, "rooms", "join", roomID, "timeline", "events").([]any)
			for _, e := range events {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.member" && ev["state_key"] == alice.id && ev["sender"] == alice.id &&
					ev["content"].(map[string]any)["membership"] == "leave" {
					found = true
				}
			}
			if !found {
				t.Errorf("bob's sync lacks alice's leave in the %s room: %s", name, s.Body)
			}
			r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+alice.id, nil)
			if r.JSON["membership"] != "leave" {
				t.Errorf("alice's membership in the %s room: %s", name, r.Body)
			}
		}
		if res := search(); len(res) != 0 {
			t.Errorf("alice is still in the user directory: %v", res)
		}
		r = hs.Do(t, "GET", "/_matrix/client/v3/profile/"+alice.id, "", nil)
		if r.JSON["displayname"] != nil || r.JSON["m.tz"] != nil {
			t.Errorf("profile after erase: %s", r.Body)
		}
		data, err := hs.DB.AllAccountData(context.Background(), alice.id)
		if err != nil || len(data) != 0 {
			t.Errorf("account data after erase: %v %v", data, err)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}
