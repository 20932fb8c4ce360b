package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestAccountLocking: an admin locks an account with PUT
// /v1/admin/lock/{userId} (v1.18); the locked account's tokens then get
// 401 M_USER_LOCKED with soft_logout on everything but /logout and
// /logout/all (v1.12), even when they were cached, no new token can be had
// by login or refresh, and the old ones work again once it is unlocked. Only admins may look, before any account lookup, and admins
// cannot be locked.
func TestAccountLocking(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		admin := user{hs, login.UserID, login.AccessToken}
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		lock := func(userID string) string { return "/_matrix/client/v1/admin/lock/" + url.PathEscape(userID) }
		const whoami = "/_matrix/client/v3/account/whoami"

		// Only admins, and before any lookup: bob learns nothing.
		hearthtest.Expect(t, bob.do(t, "GET", lock(alice.id), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "GET", lock("@nobody:hearth.test"), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "PUT", lock(alice.id), map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "GET", lock("@nobody:hearth.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", lock("@alice:elsewhere.test"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "PUT", lock(admin.id), map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		if r := admin.do(t, "GET", lock(alice.id), nil); r.Status != http.StatusOK || r.JSON["locked"] != false {
			t.Fatalf("alice before the lock: %d %s", r.Status, r.Body)
		}

		// The capability is the admins' alone.
		caps := func(u user) any {
			r := u.do(t, "GET", "/_matrix/client/v3/capabilities", nil)
			c, _ := r.JSON["capabilities"].(map[string]any)
			return c["m.account_moderation"]
		}
		if got := fmt.Sprint(caps(admin)); got != "map[lock:true suspend:false]" {
			t.Errorf("admin m.account_moderation: %s", got)
		}
		if got := caps(bob); got != nil {
			t.Errorf("user m.account_moderation: %v", got)
		}

		// A second device of alice's, its token cached by a first use.
		passwordLogin := func() hearthtest.Response {
			return hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password", "refresh_token": true})
		}
		second := passwordLogin()
		hearthtest.Expect(t, second, http.StatusOK, "")
		secondTok := second.JSON["access_token"].(string)
		hearthtest.Expect(t, hs.Do(t, "GET", whoami, secondTok, nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusOK, "")

		r := admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": true})
		if r.Status != http.StatusOK || r.JSON["locked"] != true {
			t.Fatalf("locking alice: %d %s", r.Status, r.Body)
		}
		for _, path := range []string{whoami, "/_matrix/client/v3/capabilities", "/_matrix/client/v3/joined_rooms"} {
			r := alice.do(t, "GET", path, nil)
			hearthtest.Expect(t, r, http.StatusUnauthorized, "M_USER_LOCKED")
			if r.JSON["soft_logout"] != true {
				t.Errorf("%s for a locked account: %s", path, r.Body)
			}
		}
		if r := admin.do(t, "GET", lock(alice.id), nil); r.JSON["locked"] != true {
			t.Fatalf("alice after the lock: %s", r.Body)
		}
		hearthtest.Expect(t, bob.do(t, "GET", whoami, nil), http.StatusOK, "")
		// No new access token either: not by logging in, not by refreshing.
		hearthtest.Expect(t, passwordLogin(), http.StatusUnauthorized, "M_USER_LOCKED")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.JSON["refresh_token"]}),
			http.StatusUnauthorized, "M_USER_LOCKED")

		// Unlocked, the same token works: the session was kept.
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": false}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusOK, "")

		// Locked again, logging out still works.
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": true}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/logout", secondTok, map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", whoami, secondTok, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/logout/all", map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}
