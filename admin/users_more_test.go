package admin_test

import (
	"database/sql"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

func path(p string, ids ...string) string {
	for _, id := range ids {
		p += "/" + url.PathEscape(id)
	}
	return p
}

// TestUserDetailsAPIs: memberships, account data, pushers, invite and
// joined room counts, search, devices created and renamed, and login as
// a user, each read back through the client API or the admin API.
func TestUserDetailsAPIs(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		carol := newUser(t, hs, "carol")
		room := bob.createRoom(t, nil)
		left := bob.createRoom(t, nil)
		bob.ok(t, "POST", path("/_matrix/client/v3/rooms", left, "leave"), map[string]any{})
		bob.ok(t, "POST", path("/_matrix/client/v3/rooms", room, "invite"), map[string]any{"user_id": carol.id})
		bob.ok(t, "PUT", path("/_matrix/client/v3/user", bob.id, "account_data", "org.example.global"), map[string]any{"a": 1})
		bob.ok(t, "PUT", path("/_matrix/client/v3/user", bob.id, "rooms", room, "account_data", "org.example.room"), map[string]any{"b": 2})
		bob.ok(t, "POST", "/_matrix/client/v3/pushers/set", map[string]any{"kind": "http", "app_id": "org.example.app",
			"pushkey": "key1", "app_display_name": "App", "device_display_name": "Phone", "lang": "en",
			"data": map[string]any{"url": "https://push.example.org/_matrix/push/v1/notify"}})

		m := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "memberships"), nil)["memberships"].(map[string]any)
		if m[room] != "join" || m[left] != "leave" || len(m) != 2 {
			t.Fatalf("memberships: %v", m)
		}
		ad := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "accountdata"), nil)["account_data"].(map[string]any)
		if ad["global"].(map[string]any)["org.example.global"].(map[string]any)["a"] != float64(1) ||
			ad["rooms"].(map[string]any)[room].(map[string]any)["org.example.room"].(map[string]any)["b"] != float64(2) {
			t.Fatalf("account data: %v", ad)
		}
		p := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "pushers"), nil)
		if p["total"] != float64(1) || p["pushers"].([]any)[0].(map[string]any)["pushkey"] != "key1" {
			t.Fatalf("pushers: %v", p)
		}
		if n := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "sent_invite_count"), nil); n["invite_count"] != float64(1) {
			t.Fatalf("sent_invite_count: %v", n)
		}
		if n := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "sent_invite_count")+"?from_ts=99999999999999", nil); n["invite_count"] != float64(0) {
			t.Fatalf("sent_invite_count from the future: %v", n)
		}
		if n := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "cumulative_joined_room_count"), nil); n["cumulative_joined_room_count"] != float64(2) {
			t.Fatalf("cumulative_joined_room_count: %v", n)
		}
		s := admin.do(t, "GET", path("/_synapse/admin/v1/search_users", admin.id)+"?term=car", nil)
		hearthtest.Expect(t, s, http.StatusOK, "")
		if !strings.Contains(string(s.Body), carol.id) || strings.Contains(string(s.Body), bob.id) {
			t.Fatalf("search_users: %s", s.Body)
		}

		// Devices: create one, rename it.
		r := admin.do(t, "POST", path("/_synapse/admin/v2/users", bob.id, "devices"), map[string]any{"device_id": "ADMINMADE"})
		hearthtest.Expect(t, r, http.StatusCreated, "")
		admin.ok(t, "PUT", path("/_synapse/admin/v2/users", bob.id, "devices", "ADMINMADE"), map[string]any{"display_name": "Renamed"})
		if d := admin.ok(t, "GET", path("/_synapse/admin/v2/users", bob.id, "devices", "ADMINMADE"), nil); d["display_name"] != "Renamed" {
			t.Fatalf("device after rename: %v", d)
		}
		hearthtest.Expect(t, admin.do(t, "PUT", path("/_synapse/admin/v2/users", bob.id, "devices", "NOPE"), map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")

		// Login as bob: the token is bob's; not as oneself; not in the past.
		tok := admin.ok(t, "POST", path("/_synapse/admin/v1/users", bob.id, "login"), map[string]any{})["access_token"].(string)
		if w := hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil); w.JSON["user_id"] != bob.id {
			t.Fatalf("whoami with the admin's token for bob: %s", w.Body)
		}
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/users", admin.id, "login"), map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/users", bob.id, "login"), map[string]any{"valid_until_ms": 1}), http.StatusBadRequest, "M_INVALID_PARAM")

		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/auth_providers/oidc/users/x", nil), http.StatusNotFound, "M_NOT_FOUND")

		// Suspension: carol may no longer send; lifted, she may.
		carolsRoom := carol.createRoom(t, nil)
		if s := admin.ok(t, "PUT", path("/_synapse/admin/v1/suspend", carol.id), map[string]any{"suspend": true}); s["user_"+carol.id+"_suspended"] != true {
			t.Fatalf("suspend: %v", s)
		}
		if u := admin.ok(t, "GET", path("/_synapse/admin/v2/users", carol.id), nil); u["suspended"] != true {
			t.Fatalf("user after suspend: %v", u)
		}
		hearthtest.Expect(t, carol.do(t, "PUT", path("/_matrix/client/v3/rooms", carolsRoom, "send", "m.room.message", "s1"), map[string]any{"msgtype": "m.text", "body": "x"}), http.StatusForbidden, "M_USER_SUSPENDED")
		admin.ok(t, "PUT", path("/_synapse/admin/v1/suspend", carol.id), map[string]any{"suspend": false})
		carol.ok(t, "PUT", path("/_matrix/client/v3/rooms", carolsRoom, "send", "m.room.message", "s2"), map[string]any{"msgtype": "m.text", "body": "x"})
		hearthtest.Expect(t, admin.do(t, "PUT", path("/_synapse/admin/v1/suspend", carol.id), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")

		// Third-party IDs: looked up, and shown with the user.
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/threepid/email/users/bob@example.org", nil), http.StatusNotFound, "M_NOT_FOUND")
		err := hs.DB.WriteTx(t.Context(), func(tx *sql.Tx) error {
			return storage.InsertThreePID(t.Context(), tx, storage.ThreePID{Medium: "email", Address: "bob@example.org", UserID: bob.id, ValidatedTS: 5, AddedTS: 6})
		})
		if err != nil {
			t.Fatal(err)
		}
		if l := admin.ok(t, "GET", "/_synapse/admin/v1/threepid/email/users/Bob@Example.org", nil); l["user_id"] != bob.id {
			t.Fatalf("threepid lookup: %v", l)
		}
		tp := admin.ok(t, "GET", path("/_synapse/admin/v2/users", bob.id), nil)["threepids"].([]any)
		if len(tp) != 1 || tp[0].(map[string]any)["address"] != "bob@example.org" || tp[0].(map[string]any)["validated_at"] != float64(5) {
			t.Fatalf("user's threepids: %v", tp)
		}
		hearthtest.Expect(t, admin.do(t, "GET", path("/_synapse/admin/v1/users", "not-a-user", "memberships"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, bob.do(t, "GET", path("/_synapse/admin/v1/users", bob.id, "pushers"), nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestShadowBanAndRatelimitOverride: a shadow-banned user's message gets
// an event ID but reaches nobody; lifting the ban lets messages through.
// A rate limit override of 0/0 lifts the configured limit.
func TestShadowBanAndRatelimitOverride(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.RateLimits = "on"
			c.RateLimitMessagePerSecond, c.RateLimitMessageBurst = 0.001, 2
		})
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		room := admin.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.join(t, room), http.StatusOK, "")
		send := func(u user, txn string) hearthtest.Response {
			return u.do(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", txn), map[string]any{"msgtype": "m.text", "body": txn})
		}

		admin.ok(t, "POST", path("/_synapse/admin/v1/users", bob.id, "shadow_ban"), map[string]any{})
		if u := admin.ok(t, "GET", path("/_synapse/admin/v2/users", bob.id), nil); u["shadow_banned"] != true {
			t.Fatalf("user after shadow_ban: %v", u)
		}
		r := send(bob, "hidden")
		hearthtest.Expect(t, r, http.StatusOK, "")
		hearthtest.Expect(t, admin.do(t, "GET", path("/_matrix/client/v3/rooms", room, "event", r.JSON["event_id"].(string)), nil), http.StatusNotFound, "M_NOT_FOUND")
		admin.ok(t, "DELETE", path("/_synapse/admin/v1/users", bob.id, "shadow_ban"), nil)
		r = send(bob, "seen")
		hearthtest.Expect(t, r, http.StatusOK, "")
		admin.ok(t, "GET", path("/_matrix/client/v3/rooms", room, "event", r.JSON["event_id"].(string)), nil)

		// bob's burst of 2 is spent; the override lifts the limit.
		hearthtest.Expect(t, send(bob, "limited"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		if o := admin.ok(t, "GET", path("/_synapse/admin/v1/users", bob.id, "override_ratelimit"), nil); len(o) != 0 {
			t.Fatalf("no override yet: %v", o)
		}
		o := admin.ok(t, "POST", path("/_synapse/admin/v1/users", bob.id, "override_ratelimit"), map[string]any{})
		if o["messages_per_second"] != float64(0) || o["burst_count"] != float64(0) {
			t.Fatalf("override: %v", o)
		}
		for i := range 5 {
			hearthtest.Expect(t, send(bob, "free"+string(rune('a'+i))), http.StatusOK, "")
		}
		admin.ok(t, "DELETE", path("/_synapse/admin/v1/users", bob.id, "override_ratelimit"), nil)
		hearthtest.Expect(t, send(bob, "limited-again"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/users", bob.id, "override_ratelimit"), map[string]any{"burst_count": -1}), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestUserReportsAndStatistics: reports made through the client API are
// listed, read and deleted; media statistics count a user's uploads.
func TestUserReportsAndStatistics(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		carol := newUser(t, hs, "carol")
		bob.ok(t, "POST", path("/_matrix/client/v3/users", carol.id, "report"), map[string]any{"reason": "spam"})
		l := admin.ok(t, "GET", "/_synapse/admin/v1/user_reports", nil)
		reps := l["user_reports"].([]any)
		if l["total"] != float64(1) || reps[0].(map[string]any)["target_user_id"] != carol.id || reps[0].(map[string]any)["user_id"] != bob.id {
			t.Fatalf("user reports: %v", l)
		}
		if l := admin.ok(t, "GET", "/_synapse/admin/v1/user_reports?target_user_id="+url.QueryEscape(bob.id), nil); l["total"] != float64(0) {
			t.Fatalf("reports of bob: %v", l)
		}
		id := path("/_synapse/admin/v1/user_reports", formatID(reps[0].(map[string]any)["id"]))
		if rep := admin.ok(t, "GET", id, nil); rep["reason"] != "spam" {
			t.Fatalf("report: %v", rep)
		}
		admin.ok(t, "DELETE", id, nil)
		hearthtest.Expect(t, admin.do(t, "GET", id, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/user_reports/x", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		for _, body := range []string{"12345", "123"} {
			hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v3/upload", bob.token, body), http.StatusOK, "")
		}
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v3/upload", carol.token, "1"), http.StatusOK, "")
		st := admin.ok(t, "GET", "/_synapse/admin/v1/statistics/users/media?order_by=media_length&dir=b", nil)
		us := st["users"].([]any)
		if st["total"] != float64(2) || us[0].(map[string]any)["user_id"] != bob.id || us[0].(map[string]any)["media_count"] != float64(2) ||
			us[0].(map[string]any)["media_length"] != float64(8) {
			t.Fatalf("media statistics: %v", st)
		}
		if st := admin.ok(t, "GET", "/_synapse/admin/v1/statistics/users/media?search_term=caro", nil); st["total"] != float64(1) {
			t.Fatalf("media statistics for carol: %v", st)
		}
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/statistics/users/media?order_by=nope", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		room := bob.createRoom(t, nil)
		lr := admin.ok(t, "GET", "/_synapse/admin/v1/statistics/database/rooms", nil)["rooms"].([]any)
		if len(lr) != 1 || lr[0].(map[string]any)["room_id"] != room || lr[0].(map[string]any)["estimated_size"].(float64) < 1000 {
			t.Fatalf("largest rooms: %v", lr)
		}
	})
}

func formatID(v any) string { return strconv.Itoa(int(v.(float64))) }
