package admin_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestFederationDestinations: a server sharing a room is a destination
// with that room; when it is down its failures show, and reset_connection
// clears them and the queued event reaches it once it is back.
func TestFederationDestinations(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, remote := fed[0], fed[1]
		admin := newAdmin(t, a, "admin")
		bob := newUser(t, remote, "bob")
		room := admin.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.do(t, "POST", path("/_matrix/client/v3/join", room)+"?server_name="+url.QueryEscape(a.Config.ServerName), map[string]any{}), http.StatusOK, "")
		dest := remote.Config.ServerName

		l := admin.ok(t, "GET", "/_synapse/admin/v1/federation/destinations", nil)
		ds := l["destinations"].([]any)
		if l["total"] != float64(1) || ds[0].(map[string]any)["destination"] != dest || ds[0].(map[string]any)["failure_ts"] != nil {
			t.Fatalf("destinations: %v", l)
		}
		rs := admin.ok(t, "GET", path("/_synapse/admin/v1/federation/destinations", dest, "rooms"), nil)
		if rs["total"] != float64(1) || rs["rooms"].([]any)[0].(map[string]any)["room_id"] != room {
			t.Fatalf("destination rooms: %v", rs)
		}
		hearthtest.Expect(t, admin.do(t, "GET", path("/_synapse/admin/v1/federation/destinations", "unknown.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/federation/destinations?order_by=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		remote.FederationDown(t)
		ev := admin.ok(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", "while-down"), map[string]any{"msgtype": "m.text", "body": "queued"})["event_id"].(string)
		var d map[string]any
		for deadline := time.Now().Add(30 * time.Second); ; {
			d = admin.ok(t, "GET", path("/_synapse/admin/v1/federation/destinations", dest), nil)
			if d["failure_ts"] != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the failed send never showed: %v", d)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d["retry_interval"].(float64) <= 0 || d["retry_last_ts"].(float64) < d["failure_ts"].(float64) {
			t.Fatalf("failing destination: %v", d)
		}

		remote.WrapFederation(func(fed, _ http.Handler) http.Handler { return fed })
		admin.ok(t, "POST", path("/_synapse/admin/v1/federation/destinations", dest, "reset_connection"), map[string]any{})
		if d := admin.ok(t, "GET", path("/_synapse/admin/v1/federation/destinations", dest), nil); d["failure_ts"] != nil || d["retry_interval"] != float64(0) {
			t.Fatalf("after reset_connection: %v", d)
		}
		for deadline := time.Now().Add(30 * time.Second); ; {
			if r := bob.do(t, "GET", path("/_matrix/client/v3/rooms", room, "event", ev), nil); r.Status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the queued event never reached the remote server")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
