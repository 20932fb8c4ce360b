package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

func profilePath(userID string, key ...string) string {
	p := "/_matrix/client/v3/profile/" + url.PathEscape(userID)
	for _, k := range key {
		p += "/" + url.PathEscape(k)
	}
	return p
}

func TestProfileDisplayNameAndAvatar(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, aliceTok := hs.RegisterUser(t, "alice")
		bob, bobTok := hs.RegisterUser(t, "bob")

		// Registration sets the display name to the localpart.
		r := hs.Do(t, "GET", profilePath(alice, "displayname"), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["displayname"] != "alice" {
			t.Fatalf("initial display name: %s", r.Body)
		}
		// No avatar yet.
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath(alice, "avatar_url"), "", nil), http.StatusNotFound, "M_NOT_FOUND")

		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "displayname"), aliceTok, map[string]any{"displayname": "Alice Liddell"}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "avatar_url"), aliceTok, map[string]any{"avatar_url": "mxc://hearth.test/abc"}), http.StatusOK, "")

		// Readable without a token, one field or all.
		r = hs.Do(t, "GET", profilePath(alice, "displayname"), "", nil)
		if r.Status != http.StatusOK || r.JSON["displayname"] != "Alice Liddell" || len(r.JSON) != 1 {
			t.Fatalf("displayname: %d %s", r.Status, r.Body)
		}
		r = hs.Do(t, "GET", profilePath(alice), "", nil)
		if r.Status != http.StatusOK || r.JSON["displayname"] != "Alice Liddell" || r.JSON["avatar_url"] != "mxc://hearth.test/abc" {
			t.Fatalf("profile: %d %s", r.Status, r.Body)
		}

		// Only the user may change their profile.
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "displayname"), bobTok, map[string]any{"displayname": "Mallory"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(alice, "displayname"), bobTok, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "displayname"), "", map[string]any{"displayname": "x"}), http.StatusUnauthorized, "M_MISSING_TOKEN")
		if r := hs.Do(t, "GET", profilePath(alice, "displayname"), "", nil); r.JSON["displayname"] != "Alice Liddell" {
			t.Fatalf("a refused change changed the name: %s", r.Body)
		}

		// Bad values.
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "displayname"), bobTok, map[string]any{"displayname": 12}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "displayname"), bobTok, map[string]any{"other": "x"}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "displayname"), bobTok, map[string]any{"displayname": strings.Repeat("x", 257)}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "avatar_url"), bobTok, map[string]any{"avatar_url": 5}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "avatar_url"), bobTok, map[string]any{"avatar_url": strings.Repeat("x", 1001)}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(bob, "displayname"), bobTok, "{nope"), http.StatusBadRequest, "M_NOT_JSON")

		// Deleting and clearing.
		hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(alice, "avatar_url"), aliceTok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath(alice, "avatar_url"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "displayname"), aliceTok, map[string]any{"displayname": ""}), http.StatusOK, "")
		r = hs.Do(t, "GET", profilePath(alice), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["displayname"]; ok {
			t.Fatalf("cleared display name still shown: %s", r.Body)
		}

		// Unknown local users are not found; a remote user's server that
		// cannot be reached is 502 (federation_test.go covers reachable ones).
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath("@nobody:hearth.test"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath("@nobody:hearth.test", "displayname"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath("@someone:elsewhere.invalid"), "", nil), http.StatusBadGateway, "M_UNKNOWN")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath("not-a-user"), "", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestProfileCustomFields(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, tok := hs.RegisterUser(t, "alice")

		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "m.tz"), tok, map[string]any{"m.tz": "Europe/London"}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "org.example.job"), tok, map[string]any{"org.example.job": map[string]any{"title": "tester", "level": 3}}), http.StatusOK, "")
		r := hs.Do(t, "GET", profilePath(alice, "org.example.job"), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if job, _ := r.JSON["org.example.job"].(map[string]any); job["title"] != "tester" || job["level"] != float64(3) {
			t.Fatalf("custom field: %s", r.Body)
		}
		r = hs.Do(t, "GET", profilePath(alice), "", nil)
		if r.JSON["m.tz"] != "Europe/London" || r.JSON["org.example.job"] == nil || r.JSON["displayname"] != "alice" {
			t.Fatalf("full profile: %s", r.Body)
		}

		// Key grammar and size limits.
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "NoDots"), tok, map[string]any{"NoDots": 1}), http.StatusBadRequest, "M_INVALID_PARAM")
		long := "org.example." + strings.Repeat("a", 250)
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, long), tok, map[string]any{long: 1}), http.StatusBadRequest, "M_KEY_TOO_LARGE")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "m.tz"), tok, map[string]any{"m.tz": 5}), http.StatusBadRequest, "M_BAD_JSON")
		big := strings.Repeat("x", 40*1024)
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "org.example.a"), tok, map[string]any{"org.example.a": big}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(alice, "org.example.b"), tok, map[string]any{"org.example.b": big}), http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath(alice, "org.example.b"), "", nil), http.StatusNotFound, "M_NOT_FOUND")

		// Delete, including a field that is not set.
		hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(alice, "org.example.job"), tok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(alice, "org.example.never"), tok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath(alice, "org.example.job"), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		if r := hs.Do(t, "GET", profilePath(alice, "m.tz"), "", nil); r.JSON["m.tz"] != "Europe/London" {
			t.Fatalf("deleting one field touched another: %s", r.Body)
		}
	})
}

// Profile changes are read-modify-writes of one row: a change of one
// field made at the same time as changes of others must survive.
func TestProfileConcurrentChanges(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, tok := hs.RegisterUser(t, "alice")
		const n = 16
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key, value := "displayname", fmt.Sprintf("name %d", i)
				if i == n/2 {
					key, value = "avatar_url", "mxc://hearth.test/avatar"
				}
				if r := hs.Do(t, "PUT", profilePath(alice, key), tok, map[string]any{key: value}); r.Status != http.StatusOK {
					t.Errorf("PUT %s: %d %s", key, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		if r := hs.Do(t, "GET", profilePath(alice), "", nil); r.JSON["avatar_url"] != "mxc://hearth.test/avatar" {
			t.Fatalf("the avatar change was lost: %s", r.Body)
		}
	})
}

// TestGuestProfile: guests may set and (since v1.16) delete their display
// name and change no other profile field; m.profile_fields says so.
func TestGuestProfile(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.GuestAccess = true })
		r := hs.Do(t, "POST", "/_matrix/client/v3/register?kind=guest", "", map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		guest, tok := r.JSON["user_id"].(string), r.JSON["access_token"].(string)

		hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(guest, "displayname"), tok, map[string]any{"displayname": "Visitor"}), http.StatusOK, "")
		if r := hs.Do(t, "GET", profilePath(guest, "displayname"), tok, nil); r.JSON["displayname"] != "Visitor" {
			t.Fatalf("guest display name: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(guest, "displayname"), tok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", profilePath(guest, "displayname"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		for _, key := range []string{"avatar_url", "m.tz", "org.example.field"} {
			hearthtest.Expect(t, hs.Do(t, "PUT", profilePath(guest, key), tok, map[string]any{key: "mxc://hearth.test/x"}), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
			hearthtest.Expect(t, hs.Do(t, "DELETE", profilePath(guest, key), tok, nil), http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
		}

		caps := hs.Do(t, "GET", "/_matrix/client/v3/capabilities", tok, nil)
		hearthtest.Expect(t, caps, http.StatusOK, "")
		c, _ := caps.JSON["capabilities"].(map[string]any)
		pf, _ := c["m.profile_fields"].(map[string]any)
		if pf["enabled"] != true || fmt.Sprint(pf["allowed"]) != "[displayname]" {
			t.Errorf("guest m.profile_fields: %v", pf)
		}
		for _, name := range []string{"m.set_avatar_url", "m.change_password", "m.get_login_token"} {
			if v, _ := c[name].(map[string]any); v["enabled"] != false {
				t.Errorf("guest %s: %v", name, v)
			}
		}

		// A full user keeps every field.
		_, utok := hs.RegisterUser(t, "alice")
		caps = hs.Do(t, "GET", "/_matrix/client/v3/capabilities", utok, nil)
		c, _ = caps.JSON["capabilities"].(map[string]any)
		if pf, _ := c["m.profile_fields"].(map[string]any); pf["enabled"] != true || pf["allowed"] != nil {
			t.Errorf("user m.profile_fields: %v", pf)
		}
	})
}
