package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestSignInAlertForOAuthDevices: devices made by the authorization code
// grant and by the device grant each raise a sign-in alert on the user's
// first device, naming the OAuth client. Without well_known_client the
// notice has no link (the request's Host is the signer's choice).
func TestSignInAlertForOAuthDevices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		// hearthtest turns alerts off for other tests; this one runs on the
		// defaults.
		s := hearthtest.NewServer(t, b, func(c *config.Config) { c.SignInAlerts = config.Default().SignInAlerts })
		_, first := s.RegisterUser(t, "alice")
		md := metadata(t, s)
		clientID := nativeClient(t, s)

		// Code grant.
		br := newBrowser(t, s.URL)
		conf := clientConfig(md, clientID, "OAUTHDEV001")
		verifier := oauth2.GenerateVerifier()
		q := authorize(t, br, conf, verifier, "state-1", true)
		if _, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		// Device grant, approved in the same browser.
		da, err := clientConfig(md, clientID, "TVDEVICE01").DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := br.get(da.VerificationURIComplete)
		if p = br.submit(p, "/_hearth/oauth2/link", nil, "action=allow"); p.status != http.StatusOK {
			t.Fatalf("approving: %d %s", p.status, p.body)
		}
		r := formPost(t, s, "/_hearth/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
			"device_code": {da.DeviceCode}, "client_id": {clientID}})
		if r.Status != http.StatusOK {
			t.Fatalf("device grant token: %d %s", r.Status, r.Body)
		}

		// The first device is invited to the notices room and finds both.
		var roomID string
		deadline := time.Now().Add(20 * time.Second)
		for roomID == "" {
			r := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", first, nil)
			inv, _ := r.JSON["rooms"].(map[string]any)["invite"].(map[string]any)
			for id := range inv {
				roomID = id
			}
			if time.Now().After(deadline) {
				t.Fatalf("no notices room invite: %s", r.Body)
			}
			time.Sleep(20 * time.Millisecond)
		}
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", first, map[string]any{}), http.StatusOK, "")
		found := map[string]map[string]any{}
		for len(found) < 2 {
			r := s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=20", first, nil)
			chunk, _ := r.JSON["chunk"].([]any)
			for _, e := range chunk {
				c, _ := e.(map[string]any)["content"].(map[string]any)
				if f, ok := c["org.hearth.sign_in"].(map[string]any); ok {
					f["body"] = c["body"]
					found[f["device_id"].(string)] = f
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("alerts found: %v", found)
			}
			time.Sleep(20 * time.Millisecond)
		}
		for _, dev := range []string{"OAUTHDEV001", "TVDEVICE01"} {
			f := found[dev]
			if f == nil || f["client_name"] != "Test app" || f["ip"] != "127.0.0.1" || f["new_device"] != true ||
				f["account_management_url"] != nil || !strings.Contains(f["body"].(string), "/_hearth/account on your homeserver") ||
				!strings.Contains(f["body"].(string), `"Test app" (`+dev+`)`) {
				t.Fatalf("alert for %s: %v", dev, f)
			}
		}

		// The account page turns them off (account data the client API
		// shows too): the next OAuth device raises none.
		// (The browser asks for Korean: the switch is found by its button.)
		p = br.get(s.URL + "/_hearth/account")
		if !strings.Contains(p.body, "로그인 알림") || !strings.Contains(p.body, `id="alerts-off"`) {
			t.Fatalf("account page without the alerts setting (on): %s", p.body)
		}
		p = br.submit(p, "/_hearth/account/sign-in-alerts", nil, "alerts=off")
		if p.status != http.StatusOK || !strings.Contains(p.body, `id="alerts-on"`) {
			t.Fatalf("turning alerts off: %d %s", p.status, p.body)
		}
		r = s.Do(t, "GET", "/_matrix/client/v3/user/@alice:hearth.test/account_data/org.hearth.sign_in_alerts", first, nil)
		if r.Status != http.StatusOK || r.JSON["enabled"] != false {
			t.Fatalf("account data after turning alerts off: %d %s", r.Status, r.Body)
		}
		conf = clientConfig(md, clientID, "OAUTHDEV002")
		q = authorize(t, br, conf, verifier, "state-2", false)
		if _, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier)); err != nil {
			t.Fatalf("exchange: %v", err)
		}
		s.Restart(t) // lets alerts in flight finish
		r = s.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=20", first, nil)
		if r.Status != http.StatusOK || !strings.Contains(string(r.Body), "TVDEVICE01") || strings.Contains(string(r.Body), "OAUTHDEV002") {
			t.Fatalf("an alert although the user turned them off: %s", r.Body)
		}
		p = br.get(s.URL + "/_hearth/account")
		if p = br.submit(p, "/_hearth/account/sign-in-alerts", nil, "alerts=on"); !strings.Contains(p.body, `id="alerts-off"`) {
			t.Fatalf("turning alerts on: %d %s", p.status, p.body)
		}
	})
}
