package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestCapabilities(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/capabilities", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
		r := hs.Do(t, "GET", "/_matrix/client/v3/capabilities", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		caps, _ := r.JSON["capabilities"].(map[string]any)
		enabled := func(name string) any {
			c, _ := caps[name].(map[string]any)
			return c["enabled"]
		}
		for name, want := range map[string]bool{
			"m.change_password": true, "m.set_displayname": true, "m.set_avatar_url": true,
			"m.profile_fields": true, "m.3pid_changes": false, "m.get_login_token": true,
			"m.forget_forced_upon_leave": false,
		} {
			if enabled(name) != want {
				t.Errorf("%s.enabled = %v, want %v", name, enabled(name), want)
			}
		}
		rv, _ := caps["m.room_versions"].(map[string]any)
		if rv["default"] != "11" {
			t.Errorf("default room version: %v", rv["default"])
		}
		avail, _ := rv["available"].(map[string]any)
		if len(avail) != 14 {
			t.Errorf("available room versions: %v", avail)
		}
		for _, v := range []string{"org.matrix.msc3757.10", "org.matrix.msc3757.11"} {
			if avail[v] != "unstable" {
				t.Errorf("room version %s: %v", v, avail[v])
			}
		}
		for v := 1; v <= 12; v++ {
			if avail[strconv.Itoa(v)] != "stable" {
				t.Errorf("room version %d: %v", v, avail[strconv.Itoa(v)])
			}
		}
	})
}

func TestTURNServer(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		// Without TURN: {}.
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		r := hs.Do(t, "GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if len(r.JSON) != 0 {
			t.Fatalf("no TURN configured, yet: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/voip/turnServer", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

		uris := []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"}
		hs = hearthtest.NewServer(t, b, func(c *config.Config) {
			c.TURNURIs = uris
			c.TURNSharedSecret = "coturn-secret"
			c.TURNUserLifetime = "2h"
		})
		alice, tok := hs.RegisterUser(t, "alice")
		before := time.Now()
		r = hs.Do(t, "GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		username, _ := r.JSON["username"].(string)
		expiry, user, _ := strings.Cut(username, ":")
		exp, err := strconv.ParseInt(expiry, 10, 64)
		if err != nil || user != alice {
			t.Fatalf("username %q is not <expiry>:<user id>", username)
		}
		if d := time.Unix(exp, 0).Sub(before); d < 2*time.Hour-5*time.Second || d > 2*time.Hour+5*time.Second {
			t.Errorf("credentials expire in %v, want 2h", d)
		}
		// Recompute the password the way coturn checks it.
		mac := hmac.New(sha1.New, []byte("coturn-secret"))
		mac.Write([]byte(username))
		if r.JSON["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Errorf("password %v does not verify", r.JSON["password"])
		}
		if r.JSON["ttl"] != float64(7200) {
			t.Errorf("ttl = %v, want 7200", r.JSON["ttl"])
		}
		got, _ := r.JSON["uris"].([]any)
		if len(got) != 2 || got[0] != uris[0] || got[1] != uris[1] {
			t.Errorf("uris = %v", r.JSON["uris"])
		}
	})
}

func TestThirdPartyProtocols(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	_, tok := hs.RegisterUser(t, "alice")
	r := hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/protocols", tok, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	if string(r.Body) != "{}" {
		t.Errorf("protocols: %s", r.Body)
	}
	hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/protocols", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	for _, p := range []string{"protocol/irc", "location/irc", "user/irc", "location?alias=%23a:b", "user?userid=@a:b"} {
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/"+p, tok, nil), http.StatusNotFound, "M_NOT_FOUND")
	}
}
