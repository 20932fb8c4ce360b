package clientapi_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestUIAPasswordLoginOff: with password_login off, User-Interactive
// Authentication neither offers nor accepts the account's password (a
// password attempt is a failed stage: 401 M_FORBIDDEN with the flows);
// replacing cross-signing keys offers the account page's approval
// (m.oauth) instead. Turned back on, the password works again.
func TestUIAPasswordLoginOff(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newE2EDevice(t, hs, "alice")
		cs := newCrossSigning(t)
		const csPath = "/_matrix/client/v3/keys/device_signing/upload"
		hearthtest.Expect(t, alice.do(t, "POST", csPath, cs.upload(t, alice)), http.StatusOK, "")
		other := passwordLogin(t, hs, "alice", "password", nil)
		hearthtest.Expect(t, other, http.StatusOK, "")
		otherDevice := other.JSON["device_id"].(string)

		next := hs.Config
		next.PasswordLogin = false
		if err := hs.Reload(hs.Config.WithReloaded(next)); err != nil {
			t.Fatal(err)
		}
		flowsOf := func(r hearthtest.Response) string { return fmt.Sprint(r.JSON["flows"]) }
		for _, c := range []struct {
			method, path string
			body         map[string]any
		}{
			{"POST", "/_matrix/client/v3/account/deactivate", map[string]any{}},
			{"POST", "/_matrix/client/v3/account/password", map[string]any{"new_password": "new"}},
			{"DELETE", "/_matrix/client/v3/devices/" + otherDevice, map[string]any{}},
			{"POST", "/_matrix/client/v1/login/get_token", map[string]any{}},
		} {
			r := alice.do(t, c.method, c.path, c.body)
			hearthtest.Expect(t, r, http.StatusUnauthorized, "")
			if flowsOf(r) != "[]" {
				t.Errorf("%s %s offers %s with password login off", c.method, c.path, r.Body)
			}
			c.body["auth"] = passwordAuth("alice", "password")
			r = alice.do(t, c.method, c.path, c.body)
			hearthtest.Expect(t, r, http.StatusUnauthorized, "M_FORBIDDEN")
			if flowsOf(r) != "[]" || r.JSON["session"] == nil {
				t.Errorf("%s %s with the password: %s", c.method, c.path, r.Body)
			}
		}
		// Nothing happened: the account, its password and devices remain.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", other.JSON["access_token"].(string), nil), http.StatusOK, "")

		// Cross-signing replacement: the account page's approval only.
		cs2 := newCrossSigning(t)
		r := alice.do(t, "POST", csPath, cs2.upload(t, alice))
		hearthtest.Expect(t, r, http.StatusUnauthorized, "")
		if flowsOf(r) != "[map[stages:[m.oauth]]]" || r.JSON["params"].(map[string]any)["m.oauth"] == nil {
			t.Fatalf("cross-signing reset flows with password login off: %s", r.Body)
		}
		body := cs2.upload(t, alice)
		body["auth"] = passwordAuth("alice", "password")
		hearthtest.Expect(t, alice.do(t, "POST", csPath, body), http.StatusUnauthorized, "M_FORBIDDEN")

		// Password login back on: the password is offered and accepted.
		next.PasswordLogin = true
		if err := hs.Reload(hs.Config.WithReloaded(next)); err != nil {
			t.Fatal(err)
		}
		r = alice.do(t, "DELETE", "/_matrix/client/v3/devices/"+otherDevice, map[string]any{})
		if flowsOf(r) != "[map[stages:[m.login.password]]]" {
			t.Fatalf("flows with password login on: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "DELETE", "/_matrix/client/v3/devices/"+otherDevice,
			map[string]any{"auth": passwordAuth("alice", "password")}), http.StatusOK, "")
	})
}
