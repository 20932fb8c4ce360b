package clientapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/geoip/geoiptest"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

func alertServer(t *testing.T, b hearthtest.Backend, modify func(*config.Config)) *hearthtest.Server {
	return pushServer(t, b, func(c *config.Config) {
		// hearthtest turns alerts off for other tests; these run on the
		// defaults (on, with the _server notices account).
		c.SignInAlerts = config.Default().SignInAlerts
		if modify != nil {
			modify(c)
		}
	})
}

// waitSync long-polls u's sync from since until cond holds for a response,
// and returns that response.
func waitSync(t *testing.T, u user, since string, what string, cond func(r hearthtest.Response) bool) hearthtest.Response {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := u.sync(t, since, "timeout=2000")
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last sync: %s", what, r.Body)
		}
		since, _ = r.JSON["next_batch"].(string)
	}
}

// noticeInvite waits for u's invite to a room (their notices room) and
// returns it with the sync position after it.
func noticeInvite(t *testing.T, u user, since string) (roomID, next string) {
	t.Helper()
	r := waitSync(t, u, since, "the notices room invite", func(r hearthtest.Response) bool {
		inv, _ := path(r.JSON, "rooms", "invite").(map[string]any)
		for id := range inv {
			roomID = id
		}
		return roomID != ""
	})
	return roomID, r.JSON["next_batch"].(string)
}

// alerts are the sign-in alerts in the user's notices room, oldest first
// (the user must have joined it).
func alerts(t *testing.T, u user, roomID string) []map[string]any {
	t.Helper()
	r := u.messages(t, roomID, "dir=b&limit=50")
	hearthtest.Expect(t, r, http.StatusOK, "")
	chunk, _ := r.JSON["chunk"].([]any)
	var out []map[string]any
	for i := len(chunk) - 1; i >= 0; i-- {
		ev := chunk[i].(map[string]any)
		c, _ := ev["content"].(map[string]any)
		if facts, ok := c["org.hearth.sign_in"].(map[string]any); ok && ev["type"] == "m.room.message" {
			if ev["sender"] != "@_server:hearth.test" || c["msgtype"] != "m.text" {
				t.Fatalf("alert not a text message from the notices account: %v", ev)
			}
			facts["body"], facts["formatted_body"] = c["body"], c["formatted_body"]
			out = append(out, facts)
		}
	}
	return out
}

func alertDevices(list []map[string]any) []string {
	var ids []string
	for _, a := range list {
		ids = append(ids, a["device_id"].(string))
	}
	return ids
}

// noticeRoom is the user's server notices room, "" if none was made.
func noticeRoom(t *testing.T, hs *hearthtest.Server, userID string) string {
	t.Helper()
	id, err := storage.ServerNoticeRoom(t.Context(), hs.DB.Read(), userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatal(err)
	}
	return id
}

// TestSignInAlert: a password login on a second device reaches the first
// device's sync as an invite to the notices room whose timeline holds the
// alert (device, client, address, time, sign-out link), and the first
// device's pusher gets it; a login-token login is the next alert, in the
// timeline at once; a user's {"enabled": false} stops them; the first
// device of a new account raises none.
func TestSignInAlert(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		const public = "https://matrix.example.org"
		hs := alertServer(t, b, func(c *config.Config) { c.WellKnownClient = public })
		gw := newGateway(t)
		tok, firstDevice := register(t, hs, "alice", "secret")
		phone := user{hs, "@alice:hearth.test", tok}
		hearthtest.Expect(t, phone.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "phone", nil)), http.StatusOK, "")
		since := phone.sync(t, "", "").JSON["next_batch"].(string)

		before := time.Now().UnixMilli()
		// The one signing in chooses the Host and User-Agent: the link is
		// built on well_known_client all the same, and the user agent is
		// code in the HTML (not linkified).
		req, err := http.NewRequest("POST", hs.URL+"/_matrix/client/v3/login", strings.NewReader(
			`{"type":"m.login.password","identifier":{"type":"m.id.user","user":"alice"},"password":"secret","initial_device_display_name":"Alice's <b>laptop</b>"}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Host, req.Header["User-Agent"] = "evil.example", []string{"Laptop/1.0 https://evil.example/"}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var login struct {
			DeviceID string `json:"device_id"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&login); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("login: %d %v", resp.StatusCode, err)
		}
		resp.Body.Close()
		laptopDevice := login.DeviceID

		roomID, since := noticeInvite(t, phone, since)
		// The room is recorded as the notices room just after it is made.
		waitFor(t, "the notices room "+roomID, func() bool { return noticeRoom(t, hs, phone.id) == roomID })
		// The invite itself is pushed (the alert in an invited room is not:
		// the user is not a member yet).
		waitFor(t, "the invite's push", func() bool {
			for _, n := range gw.notifications("phone") {
				if n["room_id"] == roomID {
					return true
				}
			}
			return false
		})
		hearthtest.Expect(t, phone.member(t, roomID, "join", nil), http.StatusOK, "")
		// The notice follows the invite into the room.
		waitFor(t, "the alert", func() bool { return len(alerts(t, phone, roomID)) > 0 })
		list := alerts(t, phone, roomID)
		if len(list) != 1 {
			t.Fatalf("want one alert (none for the account's first device %s), got %v", firstDevice, list)
		}
		a := list[0]
		ts, _ := a["ts"].(float64)
		body, _ := a["body"].(string)
		formatted, _ := a["formatted_body"].(string)
		wantURL := public + "/_hearth/account?action=org.matrix.device_delete&device_id=" + url.QueryEscape(laptopDevice)
		if a["device_id"] != laptopDevice || a["device_display_name"] != "Alice's <b>laptop</b>" || a["new_device"] != true ||
			a["ip"] != "127.0.0.1" || a["user_agent"] != "Laptop/1.0 https://evil.example/" ||
			a["account_management_url"] != wantURL || int64(ts) < before || a["location"] != nil {
			t.Fatalf("alert facts: %v", a)
		}
		for _, want := range []string{laptopDevice, "Alice's <b>laptop</b>", "127.0.0.1", "Laptop/1.0", wantURL, time.UnixMilli(int64(ts)).UTC().Format("2006-01-02 15:04")} {
			if !strings.Contains(body, want) {
				t.Fatalf("alert body lacks %q: %s", want, body)
			}
		}
		if strings.Contains(formatted, "<b>laptop") || !strings.Contains(formatted, "<code>&#34;Alice&#39;s &lt;b&gt;laptop&lt;/b&gt;&#34; ("+laptopDevice+")</code>") ||
			!strings.Contains(formatted, "<code>Laptop/1.0 https://evil.example/</code>") || strings.Contains(formatted, `href="https://evil`) {
			t.Fatalf("client-given text is not escaped code in the HTML: %s", formatted)
		}

		// m.login.token: the alert comes straight into the joined room's
		// timeline, and the pusher gets it with its content.
		r := phone.do(t, "POST", "/_matrix/client/v1/login/get_token", map[string]any{"auth": passwordAuth("alice", "secret")})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": r.JSON["login_token"]})
		hearthtest.Expect(t, r, http.StatusOK, "")
		tokenDevice := r.JSON["device_id"].(string)
		waitSync(t, phone, since, "the token login's alert", func(r hearthtest.Response) bool {
			for _, b := range timelineBodies(joinedRoom(t, r, roomID)) {
				if strings.Contains(b, tokenDevice) {
					return true
				}
			}
			return false
		})
		waitFor(t, "the alert's push", func() bool {
			for _, n := range gw.notifications("phone") {
				if c, _ := n["content"].(map[string]any); n["type"] == "m.room.message" && c != nil &&
					path(c, "org.hearth.sign_in", "device_id") == tokenDevice {
					return true
				}
			}
			return false
		})

		// Turned off by the user: no alert; back on: alerts again.
		const setting = "/_matrix/client/v3/user/@alice:hearth.test/account_data/org.hearth.sign_in_alerts"
		hearthtest.Expect(t, phone.do(t, "PUT", setting, map[string]any{"enabled": false}), http.StatusOK, "")
		quiet := passwordLogin(t, hs, "alice", "secret", nil)
		hearthtest.Expect(t, quiet, http.StatusOK, "")
		// The choice is read when the alert is sent, just after the login:
		// a restart lets that happen before alerts are turned on again.
		hs.Restart(t)
		hearthtest.Expect(t, phone.do(t, "PUT", setting, map[string]any{"enabled": true}), http.StatusOK, "")
		// Reusing a device ID is a sign-in too.
		r = passwordLogin(t, hs, "alice", "secret", map[string]any{"device_id": laptopDevice})
		hearthtest.Expect(t, r, http.StatusOK, "")
		waitFor(t, "the third alert", func() bool { return len(alerts(t, phone, roomID)) == 3 })
		list = alerts(t, phone, roomID)
		if got := alertDevices(list); got[0] != laptopDevice || got[1] != tokenDevice || got[2] != laptopDevice || list[2]["new_device"] != false {
			t.Fatalf("alerts for %v, want %s, %s, %s again (none for %s, made while alerts were off)", list, laptopDevice, tokenDevice, laptopDevice, quiet.JSON["device_id"])
		}
		if !strings.Contains(list[2]["body"].(string), "signed in to your account again") {
			t.Fatalf("a reused device's alert: %s", list[2]["body"])
		}

		// A new account's first device: no alert. Restart lets alerts in
		// flight finish first.
		register(t, hs, "bob", "secret")
		hs.Restart(t)
		if id := noticeRoom(t, hs, "@bob:hearth.test"); id != "" {
			t.Fatalf("bob's first device made a notices room %s", id)
		}
	})
}

// TestSignInAlertOff: with sign_in_alerts off for the server, or without
// server notices, a second device raises no alert.
func TestSignInAlertOff(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		for name, modify := range map[string]func(*config.Config){
			"sign_in_alerts off":     func(c *config.Config) { c.SignInAlerts = false },
			"no server notices user": func(c *config.Config) { c.ServerNoticesLocalpart = "" },
		} {
			t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
				hs := alertServer(t, b, modify)
				register(t, hs, "alice", "secret")
				hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
				hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
				hs.Restart(t)
				if id := noticeRoom(t, hs, "@alice:hearth.test"); id != "" {
					t.Fatalf("an alert made the notices room %s", id)
				}
			})
		}
	})
}

// TestSignInAlertLocation: with sign_in_alerts_geoip_db, the alert names
// the place of the address too.
func TestSignInAlertLocation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		db := filepath.Join(t.TempDir(), "city.mmdb")
		if err := geoiptest.Write(db, map[netip.Prefix]geoiptest.Place{
			netip.MustParsePrefix("127.0.0.0/8"): {City: "Seoul", Country: "South Korea", CountryCode: "KR"},
		}); err != nil {
			t.Fatal(err)
		}
		hs := alertServer(t, b, func(c *config.Config) { c.SignInAlertsGeoIPDB = db })
		tok, _ := register(t, hs, "alice", "secret")
		phone := user{hs, "@alice:hearth.test", tok}
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
		roomID, _ := noticeInvite(t, phone, "")
		hearthtest.Expect(t, phone.member(t, roomID, "join", nil), http.StatusOK, "")
		// The notice follows the invite into the room.
		waitFor(t, "the alert", func() bool { return len(alerts(t, phone, roomID)) > 0 })
		list := alerts(t, phone, roomID)
		if len(list) != 1 || list[0]["location"] != "Seoul, South Korea" || !strings.Contains(list[0]["body"].(string), "From: 127.0.0.1 (Seoul, South Korea)") {
			t.Fatalf("alert: %v", list)
		}
	})
}

// TestSignInAlertAdminLoginAndFailures: an administrator's login as the
// user is a sign-in too; an alert that cannot be sent (here: the notices
// room on record is not a room) does not fail the login.
func TestSignInAlertAdminLoginAndFailures(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := alertServer(t, b, nil)
		tok, _ := register(t, hs, "alice", "secret")
		phone := user{hs, "@alice:hearth.test", tok}
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		r := hs.Do(t, "POST", "/_synapse/admin/v1/users/@alice:hearth.test/login", login.AccessToken, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID, _ := noticeInvite(t, phone, "")
		hearthtest.Expect(t, phone.member(t, roomID, "join", nil), http.StatusOK, "")
		waitFor(t, "the alert", func() bool { return len(alerts(t, phone, roomID)) > 0 })
		if a := alerts(t, phone, roomID)[0]; a["device_display_name"] != "Admin login by @admin:hearth.test" {
			t.Fatalf("admin login alert: %v", a)
		}

		// A broken notices room: the login still succeeds.
		if err := hs.DB.SetServerNoticeRoom(t.Context(), "@alice:hearth.test", "!gone:hearth.test"); err != nil {
			t.Fatal(err)
		}
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
		hs.Restart(t) // the failed alert is logged meanwhile
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
	})
}
