package clientapi_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// register creates a user through POST /register with m.login.dummy and
// returns its access token and device ID.
func register(t *testing.T, hs *hearthtest.Server, user, password string) (token, deviceID string) {
	t.Helper()
	r := hs.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": user, "password": password, "auth": map[string]any{"type": "m.login.dummy"},
	})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["access_token"].(string), r.JSON["device_id"].(string)
}

func passwordLogin(t *testing.T, hs *hearthtest.Server, user, password string, extra map[string]any) hearthtest.Response {
	t.Helper()
	body := map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password,
	}
	for k, v := range extra {
		body[k] = v
	}
	return hs.Do(t, "POST", "/_matrix/client/v3/login", "", body)
}

func passwordAuth(user, password string) map[string]any {
	return map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password}
}

// whoami returns the device ID a token belongs to, failing unless it works.
func whoami(t *testing.T, hs *hearthtest.Server, token string) string {
	t.Helper()
	r := hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["device_id"].(string)
}

// expectUIAChallenge checks a 401 UIA body and returns its session.
func expectUIAChallenge(t *testing.T, r hearthtest.Response, errcode string) string {
	t.Helper()
	hearthtest.Expect(t, r, http.StatusUnauthorized, errcode)
	if errcode == "" && r.ErrCode() != "" {
		t.Fatalf("first challenge carries an error: %s", r.Body)
	}
	flows, _ := r.JSON["flows"].([]any)
	if len(flows) == 0 {
		t.Fatalf("challenge without flows: %s", r.Body)
	}
	for _, f := range flows {
		if _, ok := f.(map[string]any)["stages"].([]any); !ok {
			t.Fatalf("flow without stages: %s", r.Body)
		}
	}
	if _, ok := r.JSON["params"].(map[string]any); !ok {
		t.Fatalf("challenge without params: %s", r.Body)
	}
	s, _ := r.JSON["session"].(string)
	if s == "" {
		t.Fatalf("challenge without session: %s", r.Body)
	}
	return s
}

func TestRegistration(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		const path = "/_matrix/client/v3/register"
		r := hs.Do(t, "POST", path, "", map[string]any{})
		session := expectUIAChallenge(t, r, "")
		if fmt.Sprint(r.JSON["flows"]) != "[map[stages:[m.login.dummy]]]" {
			t.Errorf("open registration flows: %s", r.Body)
		}
		r = hs.Do(t, "POST", path, "", map[string]any{
			"username": "Alice", "password": "pw", "device_id": "MYDEVICE", "initial_device_display_name": "Phone",
			"auth": map[string]any{"type": "m.login.dummy", "session": session},
		})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" || r.JSON["device_id"] != "MYDEVICE" || r.JSON["access_token"] == nil {
			t.Fatalf("register response: %s", r.Body)
		}
		d := hs.Do(t, "GET", "/_matrix/client/v3/devices/MYDEVICE", r.JSON["access_token"].(string), nil)
		if d.JSON["display_name"] != "Phone" {
			t.Errorf("device display name: %s", d.Body)
		}
		// A used session cannot register a second account.
		r = hs.Do(t, "POST", path, "", map[string]any{"username": "alice2", "auth": map[string]any{"session": session}})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_UNKNOWN")

		dummy := map[string]any{"type": "m.login.dummy"}
		hearthtest.Expect(t, hs.Do(t, "POST", path, "", map[string]any{"username": "alice", "auth": dummy}), http.StatusBadRequest, "M_USER_IN_USE")
		hearthtest.Expect(t, hs.Do(t, "POST", path, "", map[string]any{"username": "al ice", "auth": dummy}), http.StatusBadRequest, "M_INVALID_USERNAME")
		r = hs.Do(t, "POST", path, "", map[string]any{"username": "bob", "password": "pw", "inhibit_login": true, "auth": dummy})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["access_token"] != nil || r.JSON["device_id"] != nil || r.JSON["user_id"] != "@bob:hearth.test" {
			t.Errorf("inhibit_login response: %s", r.Body)
		}
		// Without a username one is generated.
		r = hs.Do(t, "POST", path, "", map[string]any{"auth": dummy})
		hearthtest.Expect(t, r, http.StatusOK, "")

		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=carol", "", nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=ALICE", "", nil), http.StatusBadRequest, "M_USER_IN_USE")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=a!b", "", nil), http.StatusBadRequest, "M_INVALID_USERNAME")
		// The r0 alias answers too.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/r0/register/available?username=dave", "", nil), http.StatusOK, "")

		// Guests are refused unless guest_access is on.
		hearthtest.Expect(t, hs.Do(t, "POST", path+"?kind=guest", "", map[string]any{}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	})
}

func TestRegistrationModes(t *testing.T) {
	closed := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.Registration = config.RegistrationClosed })
	hearthtest.Expect(t, closed.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	hearthtest.Expect(t, closed.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=x", "", nil), http.StatusForbidden, "M_FORBIDDEN")

	guests := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.GuestAccess = true })
	r := guests.Do(t, "POST", "/_matrix/client/v3/register?kind=guest", "", map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	w := guests.Do(t, "GET", "/_matrix/client/v3/account/whoami", r.JSON["access_token"].(string), nil)
	if w.JSON["is_guest"] != true {
		t.Errorf("guest whoami: %s", w.Body)
	}

	token := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.Registration = config.RegistrationToken })
	r = token.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "x", "auth": map[string]any{"type": "m.login.dummy"}})
	hearthtest.Expect(t, r, http.StatusUnauthorized, "M_FORBIDDEN") // dummy is not offered in token mode
	if fmt.Sprint(r.JSON["flows"]) != "[map[stages:[m.login.registration_token]]]" {
		t.Errorf("token registration flows: %s", r.Body)
	}
}

func TestLoginErrorsAndTokens(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		register(t, hs, "alice", "secret")

		r := hs.Do(t, "GET", "/_matrix/client/v3/login", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if fmt.Sprint(r.JSON["flows"]) != "[map[type:m.login.password] map[get_login_token:true type:m.login.token] map[identity_providers:[] oauth_aware_preferred:true type:m.login.sso]]" {
			t.Errorf("login flows: %s", r.Body)
		}
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "wrong", nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, passwordLogin(t, hs, "nobody", "secret", nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, passwordLogin(t, hs, "@alice:elsewhere.test", "secret", nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.magic"}), http.StatusBadRequest, "M_UNKNOWN")

		// Full ID with capitals, and the deprecated top-level user field.
		r = passwordLogin(t, hs, "@ALICE:hearth.test", "secret", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" {
			t.Errorf("login response: %s", r.Body)
		}
		r = hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "user": "Alice", "password": "secret"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		tok := r.JSON["access_token"].(string)

		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", "mat_nonsense", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		r = hs.Do(t, "GET", "/_matrix/client/v3/account/whoami?access_token="+tok, "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" || r.JSON["device_id"] == "" || r.JSON["is_guest"] != false {
			t.Errorf("whoami: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/3pid", tok, nil), http.StatusOK, "")
	})
}

func TestTwentyDevices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		first, _ := register(t, hs, "alice", "secret")
		tokens := map[string]string{} // device -> token
		for i := 0; i < 20; i++ {
			r := passwordLogin(t, hs, "alice", "secret", map[string]any{"initial_device_display_name": fmt.Sprint("device ", i)})
			hearthtest.Expect(t, r, http.StatusOK, "")
			tokens[r.JSON["device_id"].(string)] = r.JSON["access_token"].(string)
		}
		if len(tokens) != 20 {
			t.Fatalf("got %d distinct devices, want 20", len(tokens))
		}
		for dev, tok := range tokens {
			if got := whoami(t, hs, tok); got != dev {
				t.Fatalf("token of %s says device %s", dev, got)
			}
		}
		var victim string
		for dev := range tokens {
			victim = dev
			break
		}
		path := "/_matrix/client/v3/devices/" + victim
		session := expectUIAChallenge(t, hs.Do(t, "DELETE", path, first, nil), "")
		r := hs.Do(t, "DELETE", path, first, map[string]any{"auth": passwordAuth("alice", "wrong")})
		expectUIAChallenge(t, r, "M_FORBIDDEN")
		auth := passwordAuth("@alice:hearth.test", "secret")
		auth["session"] = session
		hearthtest.Expect(t, hs.Do(t, "DELETE", path, first, map[string]any{"auth": auth}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tokens[victim], nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, hs.Do(t, "GET", path, first, nil), http.StatusNotFound, "M_NOT_FOUND")
		delete(tokens, victim)
		for dev, tok := range tokens {
			if got := whoami(t, hs, tok); got != dev {
				t.Fatalf("after deleting %s, token of %s says device %s", victim, dev, got)
			}
		}
		r = hs.Do(t, "GET", "/_matrix/client/v3/devices", first, nil)
		if devs, _ := r.JSON["devices"].([]any); len(devs) != 20 { // the registration's device + 19
			t.Fatalf("GET /devices lists %d devices, want 20: %s", len(devs), r.Body)
		}
	})
}

func TestConcurrentLogins(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		register(t, hs, "alice", "secret")
		const n = 50
		var wg sync.WaitGroup
		results := make([]hearthtest.Response, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				results[i] = passwordLogin(t, hs, "alice", "secret", nil)
			}(i)
		}
		wg.Wait()
		devices, tokens := map[string]bool{}, map[string]bool{}
		for _, r := range results {
			hearthtest.Expect(t, r, http.StatusOK, "")
			devices[r.JSON["device_id"].(string)] = true
			tokens[r.JSON["access_token"].(string)] = true
		}
		if len(devices) != n || len(tokens) != n {
			t.Fatalf("%d devices and %d tokens from %d logins", len(devices), len(tokens), n)
		}
		for _, r := range results {
			if whoami(t, hs, r.JSON["access_token"].(string)) != r.JSON["device_id"] {
				t.Fatal("a token belongs to the wrong device")
			}
		}
	})
}

func TestDeviceReuseAndRename(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		other, _ := register(t, hs, "alice", "secret")
		r1 := passwordLogin(t, hs, "alice", "secret", map[string]any{"device_id": "LAPTOP", "initial_device_display_name": "Laptop"})
		hearthtest.Expect(t, r1, http.StatusOK, "")
		r2 := passwordLogin(t, hs, "alice", "secret", map[string]any{"device_id": "LAPTOP", "initial_device_display_name": "Ignored"})
		hearthtest.Expect(t, r2, http.StatusOK, "")
		if r2.JSON["device_id"] != "LAPTOP" {
			t.Fatalf("device_id not kept: %s", r2.Body)
		}
		// Re-login with the same device replaces that device's token only.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", r1.JSON["access_token"].(string), nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		whoami(t, hs, r2.JSON["access_token"].(string))
		whoami(t, hs, other)
		tok := r2.JSON["access_token"].(string)
		d := hs.Do(t, "GET", "/_matrix/client/v3/devices/LAPTOP", tok, nil)
		if d.JSON["display_name"] != "Laptop" {
			t.Errorf("initial_device_display_name of a known device should be ignored: %s", d.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/devices/LAPTOP", tok, map[string]any{"display_name": "Work laptop"}), http.StatusOK, "")
		d = hs.Do(t, "GET", "/_matrix/client/v3/devices/LAPTOP", tok, nil)
		if d.JSON["display_name"] != "Work laptop" || d.JSON["device_id"] != "LAPTOP" {
			t.Errorf("renamed device: %s", d.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/devices/NOPE", tok, map[string]any{"display_name": "x"}), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestOtherUsersDevicesAreNotFound(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, _ := register(t, hs, "alice", "secret")
		bob, bobDevice := register(t, hs, "bob", "bobpw")
		path := "/_matrix/client/v3/devices/" + bobDevice
		hearthtest.Expect(t, hs.Do(t, "GET", path, alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "PUT", path, alice, map[string]any{"display_name": "mine"}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "DELETE", path, alice, map[string]any{"auth": passwordAuth("alice", "secret")}), http.StatusNotFound, "M_NOT_FOUND")
		// delete_devices ignores devices that are not the caller's.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/delete_devices", alice,
			map[string]any{"devices": []string{bobDevice}, "auth": passwordAuth("alice", "secret")}), http.StatusOK, "")
		whoami(t, hs, bob)
		// Bob's password does not authorise Alice's request.
		r := passwordLogin(t, hs, "alice", "secret", nil)
		dev := r.JSON["device_id"].(string)
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_matrix/client/v3/devices/"+dev, alice, map[string]any{"auth": passwordAuth("bob", "bobpw")}), http.StatusForbidden, "M_FORBIDDEN")
		whoami(t, hs, r.JSON["access_token"].(string))
	})
}

func TestDeleteDevicesAndLogout(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		main, _ := register(t, hs, "alice", "secret")
		var devs, toks []string
		for i := 0; i < 4; i++ {
			r := passwordLogin(t, hs, "alice", "secret", nil)
			devs = append(devs, r.JSON["device_id"].(string))
			toks = append(toks, r.JSON["access_token"].(string))
		}
		const path = "/_matrix/client/v3/delete_devices"
		session := expectUIAChallenge(t, hs.Do(t, "POST", path, main, map[string]any{"devices": devs[:2]}), "")
		// A session is bound to its request: it cannot authorise another endpoint.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/account/deactivate", main,
			map[string]any{"auth": map[string]any{"session": session}}), http.StatusForbidden, "M_FORBIDDEN")
		auth := passwordAuth("alice", "secret")
		auth["session"] = session
		hearthtest.Expect(t, hs.Do(t, "POST", path, main, map[string]any{"devices": devs[:2], "auth": auth}), http.StatusOK, "")
		for i, tok := range toks {
			r := hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil)
			if (i < 2) != (r.Status == http.StatusUnauthorized) {
				t.Fatalf("device %d after delete_devices: %d", i, r.Status)
			}
		}
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/logout", toks[2], map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", toks[2], nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/devices/"+devs[2], main, nil), http.StatusNotFound, "M_NOT_FOUND")
		whoami(t, hs, toks[3])
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/logout/all", main, map[string]any{}), http.StatusOK, "")
		for _, tok := range []string{main, toks[3]} {
			hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		}
	})
}

func TestChangePassword(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		caller, callerDevice := register(t, hs, "alice", "old")
		var others []string
		for i := 0; i < 3; i++ {
			others = append(others, passwordLogin(t, hs, "alice", "old", nil).JSON["access_token"].(string))
		}
		const path = "/_matrix/client/v3/account/password"
		expectUIAChallenge(t, hs.Do(t, "POST", path, caller, map[string]any{"new_password": "new"}), "")
		expectUIAChallenge(t, hs.Do(t, "POST", path, caller, map[string]any{"new_password": "new", "auth": passwordAuth("alice", "bad")}), "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "POST", path, caller, map[string]any{"new_password": "new", "auth": passwordAuth("alice", "old")}), http.StatusOK, "")
		if whoami(t, hs, caller) != callerDevice {
			t.Fatal("the calling device changed")
		}
		for _, tok := range others {
			hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		}
		r := hs.Do(t, "GET", "/_matrix/client/v3/devices", caller, nil)
		if devs, _ := r.JSON["devices"].([]any); len(devs) != 1 {
			t.Fatalf("devices after password change: %s", r.Body)
		}
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "old", nil), http.StatusForbidden, "M_FORBIDDEN")
		kept := passwordLogin(t, hs, "alice", "new", nil).JSON["access_token"].(string)
		// logout_devices: false keeps the other sessions.
		hearthtest.Expect(t, hs.Do(t, "POST", path, caller, map[string]any{"new_password": "newer", "logout_devices": false, "auth": passwordAuth("alice", "new")}), http.StatusOK, "")
		whoami(t, hs, kept)
		whoami(t, hs, caller)
	})
}

func TestDeactivate(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		tok, _ := register(t, hs, "alice", "secret")
		other := passwordLogin(t, hs, "alice", "secret", nil).JSON["access_token"].(string)
		const path = "/_matrix/client/v3/account/deactivate"
		r := hs.Do(t, "POST", path, tok, map[string]any{})
		expectUIAChallenge(t, r, "")
		if fmt.Sprint(r.JSON["flows"]) != "[map[stages:[m.login.password]]]" {
			t.Errorf("deactivate flows: %s", r.Body)
		}
		expectUIAChallenge(t, hs.Do(t, "POST", path, tok, map[string]any{"auth": passwordAuth("alice", "wrong")}), "M_FORBIDDEN")
		r = hs.Do(t, "POST", path, tok, map[string]any{"auth": passwordAuth("alice", "secret"), "erase": true})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["id_server_unbind_result"] != "success" {
			t.Errorf("deactivate response: %s", r.Body)
		}
		for _, tk := range []string{tok, other} {
			hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tk, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		}
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusForbidden, "M_FORBIDDEN")
		// The user ID stays taken.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=alice", "", nil), http.StatusBadRequest, "M_USER_IN_USE")
	})
}

func TestRefreshTokenRotation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		register(t, hs, "alice", "secret")
		r := passwordLogin(t, hs, "alice", "secret", map[string]any{"refresh_token": true})
		hearthtest.Expect(t, r, http.StatusOK, "")
		at1, rt1 := r.JSON["access_token"].(string), r.JSON["refresh_token"].(string)
		if ms, _ := r.JSON["expires_in_ms"].(float64); ms != 300000 {
			t.Fatalf("expires_in_ms: %s", r.Body)
		}
		device := whoami(t, hs, at1)
		const path = "/_matrix/client/v3/refresh"
		r = hs.Do(t, "POST", path, "", map[string]any{"refresh_token": rt1})
		hearthtest.Expect(t, r, http.StatusOK, "")
		at2, rt2 := r.JSON["access_token"].(string), r.JSON["refresh_token"].(string)
		if rt2 == rt1 || at2 == at1 || r.JSON["expires_in_ms"] == nil {
			t.Fatalf("refresh response: %s", r.Body)
		}
		// Until the new access token is used, the old refresh token still works
		// (a client that lost the response can retry).
		r = hs.Do(t, "POST", path, "", map[string]any{"refresh_token": rt1})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if whoami(t, hs, at2) != device {
			t.Fatal("the refreshed token is on another device")
		}
		r = hs.Do(t, "POST", path, "", map[string]any{"refresh_token": rt1})
		hearthtest.Expect(t, r, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		if r.JSON["soft_logout"] != false {
			t.Errorf("unknown refresh token should be soft_logout false: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", at1, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		// The new generation goes on rotating.
		r = hs.Do(t, "POST", path, "", map[string]any{"refresh_token": rt2})
		hearthtest.Expect(t, r, http.StatusOK, "")
		at3 := r.JSON["access_token"].(string)
		if whoami(t, hs, at3) != device {
			t.Fatal("third generation is on another device")
		}
		hearthtest.Expect(t, hs.Do(t, "POST", path, "", map[string]any{"refresh_token": rt2}), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		// A client without refresh support gets a token that does not expire.
		r = passwordLogin(t, hs, "alice", "secret", nil)
		if r.JSON["refresh_token"] != nil || r.JSON["expires_in_ms"] != nil {
			t.Errorf("login without refresh_token: %s", r.Body)
		}
	})
}

func TestLoginToken(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		tok, _ := register(t, hs, "alice", "secret")
		const path = "/_matrix/client/v1/login/get_token"
		expectUIAChallenge(t, hs.Do(t, "POST", path, tok, map[string]any{}), "")
		r := hs.Do(t, "POST", path, tok, map[string]any{"auth": passwordAuth("alice", "secret")})
		hearthtest.Expect(t, r, http.StatusOK, "")
		lt := r.JSON["login_token"].(string)
		if r.JSON["expires_in_ms"] == nil {
			t.Errorf("get_token response: %s", r.Body)
		}
		r = hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": lt})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" {
			t.Fatalf("token login: %s", r.Body)
		}
		whoami(t, hs, r.JSON["access_token"].(string))
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": lt}), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestRegistrationTokens(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.Registration = config.RegistrationToken })
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		admin := login.AccessToken
		const api = "/_synapse/admin/v1/registration_tokens"
		r := hs.Do(t, "POST", api+"/new", admin, map[string]any{"token": "abc", "uses_allowed": 3})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["token"] != "abc" || r.JSON["uses_allowed"] != float64(3) || r.JSON["pending"] != float64(0) || r.JSON["completed"] != float64(0) || r.JSON["expiry_time"] != nil {
			t.Fatalf("new token: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "POST", api+"/new", admin, map[string]any{"token": "abc"}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "POST", api+"/new", admin, map[string]any{"token": "a b"}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "POST", api+"/new", admin, map[string]any{"uses_allowed": -1}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "POST", api+"/new", admin, map[string]any{"expiry_time": 1}), http.StatusBadRequest, "M_INVALID_PARAM")
		r = hs.Do(t, "POST", api+"/new", admin, map[string]any{"length": 24})
		hearthtest.Expect(t, r, http.StatusOK, "")
		gen := r.JSON["token"].(string)
		if len(gen) != 24 || r.JSON["uses_allowed"] != nil {
			t.Fatalf("generated token: %s", r.Body)
		}
		validity := func(tok string) bool {
			r := hs.Do(t, "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token="+tok, "", nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["valid"] == true
		}
		if !validity("abc") || validity("nope") {
			t.Fatal("validity is wrong before use")
		}

		// Ten concurrent registrations with a token allowing three uses:
		// exactly three accounts are made.
		const n = 10
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				user := fmt.Sprint("user", i)
				r := hs.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw"})
				if r.Status != http.StatusUnauthorized {
					statuses[i] = r.Status
					return
				}
				session, _ := r.JSON["session"].(string)
				r = hs.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw",
					"auth": map[string]any{"type": "m.login.registration_token", "token": "abc", "session": session}})
				statuses[i] = r.Status
				if r.Status == http.StatusUnauthorized && r.ErrCode() != "M_FORBIDDEN" {
					t.Errorf("refused token stage: %s", r.Body)
				}
			}(i)
		}
		wg.Wait()
		ok := 0
		for _, s := range statuses {
			if s == http.StatusOK {
				ok++
			} else if s != http.StatusUnauthorized {
				t.Errorf("unexpected status %d", s)
			}
		}
		if ok != 3 {
			t.Fatalf("%d registrations succeeded with a 3-use token, want 3 (%v)", ok, statuses)
		}
		r = hs.Do(t, "GET", api+"/abc", admin, nil)
		if r.JSON["completed"] != float64(3) || r.JSON["pending"] != float64(0) {
			t.Fatalf("token after use: %s", r.Body)
		}
		if validity("abc") {
			t.Fatal("a used-up token is still valid")
		}
		r = hs.Do(t, "GET", api+"?valid=false", admin, nil)
		if list, _ := r.JSON["registration_tokens"].([]any); len(list) != 1 || list[0].(map[string]any)["token"] != "abc" {
			t.Fatalf("invalid tokens: %s", r.Body)
		}
		r = hs.Do(t, "GET", api, admin, nil)
		if list, _ := r.JSON["registration_tokens"].([]any); len(list) != 2 {
			t.Fatalf("all tokens: %s", r.Body)
		}
		// Raising uses_allowed makes it valid again; null removes the limit.
		r = hs.Do(t, "PUT", api+"/abc", admin, map[string]any{"uses_allowed": 4})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["uses_allowed"] != float64(4) || !validity("abc") {
			t.Fatalf("updated token: %s", r.Body)
		}
		r = hs.Do(t, "PUT", api+"/abc", admin, map[string]any{"uses_allowed": nil})
		if r.JSON["uses_allowed"] != nil {
			t.Fatalf("uses_allowed null: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", api+"/missing", admin, map[string]any{"uses_allowed": 1}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "DELETE", api+"/"+gen, admin, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", api+"/"+gen, admin, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "DELETE", api+"/"+gen, admin, nil), http.StatusNotFound, "M_NOT_FOUND")

		// Not for ordinary users.
		hearthtest.Expect(t, hs.Do(t, "GET", api, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
		var userTok string
		for i := 0; i < n && userTok == ""; i++ {
			if r := passwordLogin(t, hs, fmt.Sprint("user", i), "pw", nil); r.Status == http.StatusOK {
				userTok = r.JSON["access_token"].(string)
			}
		}
		hearthtest.Expect(t, hs.Do(t, "GET", api, userTok, nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestLoginRateLimit(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.RateLimits = "on"
		c.RateLimitLoginPerSecond = 0.01
		c.RateLimitLoginBurst = 2
		c.RateLimitRegisterBurst = 10
	})
	register(t, hs, "alice", "secret")
	hearthtest.Expect(t, passwordLogin(t, hs, "alice", "wrong", nil), http.StatusForbidden, "M_FORBIDDEN")
	hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", nil), http.StatusOK, "")
	r := passwordLogin(t, hs, "alice", "secret", nil)
	hearthtest.Expect(t, r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if ms, _ := r.JSON["retry_after_ms"].(float64); ms <= 0 {
		t.Fatalf("no retry_after_ms: %s", r.Body)
	}
}

// A UIA session started on one process finishes on another sharing the
// database, and is then used up on both.
func TestUIASessionAcrossProcesses(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		dbURL := hearthtest.DatabaseURL(t, b)
		shared := func(c *config.Config) { c.DatabaseURL = dbURL }
		hs1 := hearthtest.NewServer(t, b, shared)
		hs2 := hearthtest.NewServer(t, b, shared)
		tok, _ := register(t, hs1, "alice", "secret")
		r := passwordLogin(t, hs2, "alice", "secret", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		dev := r.JSON["device_id"].(string)
		path := "/_matrix/client/v3/devices/" + dev
		session := expectUIAChallenge(t, hs1.Do(t, "DELETE", path, tok, nil), "")
		auth := passwordAuth("alice", "secret")
		auth["session"] = session
		hearthtest.Expect(t, hs2.Do(t, "DELETE", path, tok, map[string]any{"auth": auth}), http.StatusOK, "")
		hearthtest.Expect(t, hs1.Do(t, "GET", path, tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs1.Do(t, "POST", "/_matrix/client/v3/delete_devices", tok,
			map[string]any{"devices": []string{}, "auth": map[string]any{"session": session}}), http.StatusBadRequest, "M_UNKNOWN")
	})
}

// TestMaxDevicesPerUser: a login beyond max_devices_per_user is 403
// M_USER_LIMIT_EXCEEDED (v1.18) with the required info_uri (by default
// the server's own address).
func TestMaxDevicesPerUser(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.MaxDevicesPerUser = 2 })
		register(t, hs, "alice", "secret")
		r := passwordLogin(t, hs, "alice", "secret", map[string]any{"device_id": "SECOND"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = passwordLogin(t, hs, "alice", "secret", nil)
		hearthtest.Expect(t, r, http.StatusForbidden, "M_USER_LIMIT_EXCEEDED")
		if r.JSON["info_uri"] != "https://"+hs.Config.ServerName+"/" {
			t.Errorf("info_uri: %s", r.Body)
		}
		// Logging in again on an existing device is not a new device.
		hearthtest.Expect(t, passwordLogin(t, hs, "alice", "secret", map[string]any{"device_id": "SECOND"}), http.StatusOK, "")
	})
}

// TestRevokedTokensFailAtOnce: access tokens are cached in memory after
// their first use; every way of revoking one must take effect on the very
// next request, not when the cache entry expires.
func TestRevokedTokensFailAtOnce(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		main, _ := register(t, hs, "alice", "secret")
		login := func(extra map[string]any) (token, device string) {
			t.Helper()
			r := passwordLogin(t, hs, "alice", "secret", extra)
			hearthtest.Expect(t, r, http.StatusOK, "")
			token = r.JSON["access_token"].(string)
			return token, whoami(t, hs, token) // cached from here on
		}
		gone := func(what, token string) {
			t.Helper()
			r := hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
			if r.Status != http.StatusUnauthorized {
				t.Fatalf("token still accepted after %s: %d %s", what, r.Status, r.Body)
			}
		}
		auth := passwordAuth("alice", "secret")

		tok, dev := login(nil)
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_matrix/client/v3/devices/"+dev, main, map[string]any{"auth": auth}), http.StatusOK, "")
		gone("DELETE /devices", tok)

		tok, dev = login(nil)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/delete_devices", main, map[string]any{"devices": []string{dev}, "auth": auth}), http.StatusOK, "")
		gone("delete_devices", tok)

		tok, dev = login(nil)
		login(map[string]any{"device_id": dev})
		gone("a new login on the same device", tok)

		tok, _ = login(nil)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/logout", tok, map[string]any{}), http.StatusOK, "")
		gone("logout", tok)

		tok, _ = login(nil)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/account/password", main,
			map[string]any{"new_password": "secret", "auth": auth}), http.StatusOK, "")
		gone("a password change", tok)
		whoami(t, hs, main)

		tok, _ = login(nil)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/account/deactivate", main, map[string]any{"auth": auth}), http.StatusOK, "")
		gone("deactivation (other device)", tok)
		gone("deactivation (calling device)", main)
	})
}
