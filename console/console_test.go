package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// browserless is an HTTP client with a cookie jar that does not follow
// redirects, so tests see the console's answers as they are.
func browserless(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, c *http.Client, u string, form url.Values) (int, string, http.Header) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// signIn signs in through the form and returns the session's CSRF token.
func signIn(t *testing.T, c *http.Client, base, user, password string) (int, string) {
	t.Helper()
	_, body := get(t, c, base+"/_hearth/admin/login")
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token on the sign-in page: %s", body)
	}
	status, _, _ := post(t, c, base+"/_hearth/admin/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}})
	if status != http.StatusSeeOther {
		return status, ""
	}
	st, page := get(t, c, base+"/_hearth/admin/users")
	if st != http.StatusOK {
		t.Fatalf("users page after sign-in: %d %s", st, page)
	}
	m = csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no CSRF token on the users page")
	}
	return status, m[1]
}

func TestConsoleAccess(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(cfg *config.Config) { cfg.ServerNoticesLocalpart = "notices" })
		if _, err := hs.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "boss", Password: "bosspass", Admin: true}); err != nil {
			t.Fatal(err)
		}
		hs.RegisterUser(t, "alice") // password "password", not an admin

		// Signed out: pages send to the sign-in page, actions are refused.
		c := browserless(t)
		if st, _ := get(t, c, hs.URL+"/_hearth/admin/users"); st != http.StatusFound {
			t.Fatalf("signed-out users page: %d, want 302", st)
		}
		resp, err := c.Get(hs.URL + "/_hearth/admin/login")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Fatalf("clickjacking headers missing: %v", resp.Header)
		}

		// A non-admin with the right password gets 403 and no session.
		if st, _ := signIn(t, c, hs.URL, "alice", "password"); st != http.StatusForbidden {
			t.Fatalf("non-admin sign-in: %d, want 403", st)
		}
		if st, _ := get(t, c, hs.URL+"/_hearth/admin/"); st != http.StatusFound {
			t.Fatalf("non-admin dashboard: %d, want 302 to sign-in", st)
		}
		// A wrong password is refused too.
		if st, _ := signIn(t, c, hs.URL, "boss", "wrong"); st != http.StatusForbidden {
			t.Fatalf("wrong password: %d, want 403", st)
		}
		// A sign-in without the form's CSRF token is refused.
		if st, _, _ := post(t, browserless(t), hs.URL+"/_hearth/admin/login", url.Values{"user": {"boss"}, "password": {"bosspass"}}); st != http.StatusForbidden {
			t.Fatalf("sign-in without CSRF: %d, want 403", st)
		}

		// The admin signs in; the session cookie is HttpOnly and SameSite=Strict.
		admin := browserless(t)
		_, body := get(t, admin, hs.URL+"/_hearth/admin/login")
		tok := csrfField.FindStringSubmatch(body)[1]
		st, _, hdr := post(t, admin, hs.URL+"/_hearth/admin/login", url.Values{"csrf": {tok}, "user": {"boss"}, "password": {"bosspass"}})
		if st != http.StatusSeeOther {
			t.Fatalf("admin sign-in: %d %v", st, hdr)
		}
		var session string
		for _, sc := range hdr.Values("Set-Cookie") {
			if strings.HasPrefix(sc, "hearth_console=") {
				session = sc
			}
		}
		if !strings.Contains(session, "HttpOnly") || !strings.Contains(session, "SameSite=Strict") {
			t.Fatalf("session cookie attributes: %s", session)
		}
		st, page := get(t, admin, hs.URL+"/_hearth/admin/")
		if st != http.StatusOK || !strings.Contains(page, "<svg") || !strings.Contains(page, "Messages per day") {
			t.Fatalf("dashboard: %d %s", st, page)
		}
		csrf := csrfField.FindStringSubmatch(page)[1]

		// Every page renders whole for the admin.
		for _, p := range []string{"/", "/users?q=ali", "/user?id=%40alice%3Ahearth.test", "/rooms", "/media?user=%40alice%3Ahearth.test",
			"/reports", "/tokens", "/federation", "/notices", "/tasks"} {
			st, body := get(t, admin, hs.URL+"/_hearth/admin"+p)
			if st != http.StatusOK || !strings.HasSuffix(strings.TrimSpace(body), "</html>") {
				t.Fatalf("page %s: %d %s", p, st, body)
			}
		}
		// Bad input is a clear error page, not a 500.
		if st, _ := get(t, admin, hs.URL+"/_hearth/admin/user?id=nonsense"); st != http.StatusBadRequest {
			t.Fatalf("user page with a bad ID: %d, want 400", st)
		}

		// A forged form (no or a wrong CSRF token) changes nothing.
		for _, forged := range []url.Values{{"id": {"@alice:hearth.test"}, "password": {"pwned"}},
			{"id": {"@alice:hearth.test"}, "password": {"pwned"}, "csrf": {strings.Repeat("0", len(csrf))}}} {
			if st, _, _ := post(t, admin, hs.URL+"/_hearth/admin/user/password", forged); st != http.StatusForbidden {
				t.Fatalf("forged form: %d, want 403", st)
			}
		}
		if _, err := hs.Accounts.CheckPassword(t.Context(), "alice", "password"); err != nil {
			t.Fatalf("a forged form changed the password: %v", err)
		}
		// With the token the same form works.
		st, _, hdr = post(t, admin, hs.URL+"/_hearth/admin/user/password", url.Values{"csrf": {csrf}, "id": {"@alice:hearth.test"}, "password": {"newpass"}})
		if st != http.StatusSeeOther {
			t.Fatalf("reset with CSRF token: %d", st)
		}
		if _, err := hs.Accounts.CheckPassword(t.Context(), "alice", "newpass"); err != nil {
			t.Fatalf("password not reset: %v", err)
		}

		// A server notice, through the client API's handler in process.
		st, _, hdr = post(t, admin, hs.URL+"/_hearth/admin/notices", url.Values{"csrf": {csrf}, "user": {"@alice:hearth.test"}, "body": {"Maintenance at noon"}})
		if st != http.StatusSeeOther {
			t.Fatalf("server notice: %d", st)
		}
		if _, page := get(t, admin, hs.URL+hdr.Get("Location")); !strings.Contains(page, "Notice sent ($") {
			t.Fatalf("after the notice: %s", page)
		}

		// An admin who loses the flag loses the console at once.
		root := adminToken(t, hs)
		if r := hs.Do(t, "PUT", "/_synapse/admin/v1/users/@boss:hearth.test/admin", root, map[string]bool{"admin": false}); r.Status != 200 {
			t.Fatalf("demoting: %d %s", r.Status, r.Body)
		}
		if st, _ := get(t, admin, hs.URL+"/_hearth/admin/users"); st != http.StatusForbidden {
			t.Fatalf("demoted admin: %d, want 403", st)
		}

		// Sign-out ends the session server-side.
		if r := hs.Do(t, "PUT", "/_synapse/admin/v1/users/@boss:hearth.test/admin", root, map[string]bool{"admin": true}); r.Status != 200 {
			t.Fatalf("promoting: %d %s", r.Status, r.Body)
		}
		if st, _, _ := post(t, admin, hs.URL+"/_hearth/admin/logout", url.Values{"csrf": {csrf}}); st != http.StatusSeeOther {
			t.Fatalf("sign-out: %d", st)
		}
		if st, _ := get(t, admin, hs.URL+"/_hearth/admin/users"); st != http.StatusFound {
			t.Fatalf("after sign-out: %d, want 302", st)
		}
	})
}

// adminToken is an access token of a second admin, for the admin API.
func adminToken(t *testing.T, hs *hearthtest.Server) string {
	t.Helper()
	l, err := hs.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "root" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "")), Password: "x", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	return l.AccessToken
}
