package federation_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// A room version 12 room (domainless room ID) across two servers: an
// invite from B carries the full create event to A (MSC4311), alice joins
// through B and messages flow both ways.
func TestRoomVersion12AcrossServers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		r := bob.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "12", "preset": "private_chat", "name": "twelve"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		if strings.Contains(roomID, ":") {
			t.Fatalf("room ID %s has a domain", roomID)
		}
		bob.send(t, roomID, "before alice")
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")

		// Alice's server shows the invite with the whole create event.
		var create map[string]any
		deadline := time.Now().Add(10 * time.Second)
		for create == nil && time.Now().Before(deadline) {
			r = alice.do(t, "GET", "/_matrix/client/v3/sync", nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			rooms, _ := r.JSON["rooms"].(map[string]any)
			invite, _ := rooms["invite"].(map[string]any)
			room, _ := invite[roomID].(map[string]any)
			state, _ := room["invite_state"].(map[string]any)
			events, _ := state["events"].([]any)
			for _, e := range events {
				if ev := e.(map[string]any); ev["type"] == "m.room.create" {
					create = ev
				}
			}
			if create == nil {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if create == nil || create["origin_server_ts"] == nil || create["signatures"] == nil {
			t.Fatalf("invite state create event: %v", create)
		}

		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["name"] != "twelve" {
			t.Fatalf("room name on A: %s", r.Body)
		}
		bob.send(t, roomID, "hello from B")
		alice.waitForMessage(t, roomID, "hello from B")
		alice.send(t, roomID, "hello from A")
		bob.waitForMessage(t, roomID, "hello from A")
	})
}
