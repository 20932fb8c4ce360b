package oauth_test

import (
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

func passwordLoginReq(t *testing.T, s *hearthtest.Server, user, password string) hearthtest.Response {
	t.Helper()
	return s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user}, "password": password})
}

// TestPasswordLoginSwitch: password_login: false, applied by a reload
// (SIGHUP), takes m.login.password off /login (400 M_UNKNOWN, the spec's
// answer to a login type the server does not offer) and the password form
// and sign-up off the OAuth pages, while m.login.token and issued tokens
// keep working; turning it on again restores it.
func TestPasswordLoginSwitch(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		_, token := s.RegisterUser(t, "alice")
		setPasswordLogin := func(on bool) {
			t.Helper()
			next := s.Config
			next.PasswordLogin = on
			if err := s.Reload(s.Config.WithReloaded(next)); err != nil {
				t.Fatal(err)
			}
		}
		setPasswordLogin(false)

		r := s.Do(t, "GET", "/_matrix/client/v3/login", "", nil)
		if fmt.Sprint(r.JSON["flows"]) != "[map[get_login_token:true type:m.login.token]]" {
			t.Fatalf("login flows with password login off: %s", r.Body)
		}
		hearthtest.Expect(t, passwordLoginReq(t, s, "alice", "password"), http.StatusBadRequest, "M_UNKNOWN")
		hearthtest.Expect(t, passwordLoginReq(t, s, "alice", "wrong"), http.StatusBadRequest, "M_UNKNOWN")
		hearthtest.Expect(t, whoami(t, s, token), http.StatusOK, "")
		if err := s.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.InsertLoginToken(ctx, tx, "mlt_switch", "@alice:hearth.test", time.Now().Add(time.Minute).UnixMilli())
		}); err != nil {
			t.Fatal(err)
		}
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": "mlt_switch"}), http.StatusOK, "")

		// The OAuth pages: no password form, a posted one refused, no sign-up.
		if md := metadata(t, s); md["prompt_values_supported"] != nil {
			t.Fatalf("prompt=create offered with password login off: %v", md["prompt_values_supported"])
		}
		br := newBrowser(t, s.URL)
		p := br.get(s.URL + "/_hearth/account")
		if p.url.Path != loginAction || len(p.forms) != 0 || !strings.Contains(p.body, `id="no-password"`) || strings.Contains(p.body, "create-account") {
			t.Fatalf("sign-in page with password login off: %s %d %s", p.url, p.status, p.body)
		}
		p = br.postForm(loginAction, map[string]string{"username": "alice", "password": "password", "next": "/_hearth/account"})
		if p.status != http.StatusForbidden {
			t.Fatalf("password sign-in posted with password login off: %d %s", p.status, p.body)
		}
		if p = br.get(s.URL + "/_hearth/account"); p.url.Path != loginAction {
			t.Fatalf("signed in although password login is off: %s", p.url)
		}
		if p = br.get(s.URL + "/_hearth/oauth2/register-account"); p.status != http.StatusForbidden {
			t.Fatalf("sign-up page with password login off: %d", p.status)
		}

		setPasswordLogin(true)
		hearthtest.Expect(t, passwordLoginReq(t, s, "alice", "password"), http.StatusOK, "")
		p = br.get(s.URL + "/_hearth/account")
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		if p.url.Path != "/_hearth/account" || p.status != http.StatusOK {
			t.Fatalf("password sign-in after turning it on again: %s %d", p.url, p.status)
		}
	})
}

// TestAccountProfileAndDeactivation: the account page sets the display
// name (the rooms see it) and deactivates the account only with the
// password, after which no device, token or browser session of it works.
// With password login off, typing the user ID confirms instead.
func TestAccountProfileAndDeactivation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		alice, token := s.RegisterUser(t, "alice")
		r := s.Do(t, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		_, carolToken := s.RegisterUser(t, "carol")
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/join", carolToken, map[string]any{}), http.StatusOK, "")

		md := metadata(t, s)
		if !contains(md["account_management_actions_supported"], "org.matrix.profile") || !contains(md["account_management_actions_supported"], "org.matrix.account_deactivate") {
			t.Fatalf("account actions: %v", md["account_management_actions_supported"])
		}
		br := newBrowser(t, s.URL)
		p := br.get(md["account_management_uri"].(string) + "?action=org.matrix.account_deactivate")
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		if i, j := strings.Index(p.body, `id="deactivate"`), strings.Index(p.body, `id="devices"`); p.status != http.StatusOK || i < 0 || j < 0 || i > j {
			t.Fatalf("the account_deactivate action does not show deactivation first: %d %s", p.status, p.body)
		}
		p = br.get(md["account_management_uri"].(string) + "?action=org.matrix.profile")
		if i, j := strings.Index(p.body, `id="profile"`), strings.Index(p.body, `id="devices"`); i < 0 || j < 0 || i > j {
			t.Fatalf("the profile action does not show the profile first: %s", p.body)
		}
		p = br.submit(p, "/_hearth/account/profile", map[string]string{"displayname": "  Alice Liddell "}, "")
		if p.status != http.StatusOK || !strings.Contains(p.body, `value="Alice Liddell"`) {
			t.Fatalf("after saving the profile: %d %s", p.status, p.body)
		}
		if r := s.Do(t, "GET", "/_matrix/client/v3/profile/"+alice+"/displayname", "", nil); r.JSON["displayname"] != "Alice Liddell" {
			t.Fatalf("display name: %s", r.Body)
		}
		r = s.Do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+alice, token, nil)
		if r.JSON["displayname"] != "Alice Liddell" {
			t.Fatalf("member event after the profile change: %s", r.Body)
		}
		if q := br.submit(p, "/_hearth/account/profile", map[string]string{"displayname": strings.Repeat("x", 256)}, ""); q.status != http.StatusBadRequest {
			t.Fatalf("too long a display name: %d", q.status)
		}

		// A wrong password is refused, said next to the field.
		q := br.submit(p, "/_hearth/account/deactivate", map[string]string{"password": "nope"}, "")
		if q.status != http.StatusForbidden || !strings.Contains(q.body, `id="deactivate-error"`) || !strings.Contains(q.body, `aria-describedby="deactivate-help deactivate-error"`) {
			t.Fatalf("deactivation with a wrong password: %d %s", q.status, q.body)
		}
		hearthtest.Expect(t, whoami(t, s, token), http.StatusOK, "")
		// Without the CSRF token, nothing happens.
		if q := br.postForm("/_hearth/account/deactivate", map[string]string{"password": "password", "csrf": "forged-forged-forged-forged-forged"}); q.status != http.StatusForbidden {
			t.Fatalf("deactivation without the CSRF token: %d", q.status)
		}
		hearthtest.Expect(t, whoami(t, s, token), http.StatusOK, "")

		r = s.Do(t, "GET", "/_matrix/client/v3/sync", carolToken, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := r.JSON["next_batch"].(string)
		q = br.submit(p, "/_hearth/account/deactivate", map[string]string{"password": "password", "erase": "true"}, "")
		if q.status != http.StatusOK || !strings.Contains(q.body, alice) {
			t.Fatalf("deactivation: %d %s", q.status, q.body)
		}
		// Alice left the room: carol sees the leave in her /sync.
		r = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=5000&since="+url.QueryEscape(since), carolToken, nil)
		left := false
		if rooms, _ := r.JSON["rooms"].(map[string]any); rooms != nil {
			room, _ := rooms["join"].(map[string]any)[roomID].(map[string]any)
			if room != nil {
				for _, e := range room["timeline"].(map[string]any)["events"].([]any) {
					ev := e.(map[string]any)
					if ev["type"] == "m.room.member" && ev["state_key"] == alice && ev["content"].(map[string]any)["membership"] == "leave" {
						left = true
					}
				}
			}
		}
		if !left {
			t.Fatalf("carol's sync lacks alice's leave after the account page deactivated her: %s", r.Body)
		}
		hearthtest.Expect(t, whoami(t, s, token), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, passwordLoginReq(t, s, "alice", "password"), http.StatusForbidden, "")
		if r := s.Do(t, "GET", "/_matrix/client/v3/profile/"+alice+"/displayname", "", nil); r.JSON["displayname"] != nil {
			t.Fatalf("display name after deactivation with erase: %s", r.Body)
		}
		if p := br.get(s.URL + "/_hearth/account"); p.url.Path != loginAction {
			t.Fatalf("account page after deactivation: %s", p.url)
		}

		// Password login off: the user ID confirms.
		bob, _ := s.RegisterUser(t, "bob")
		br = newBrowser(t, s.URL)
		p = br.get(s.URL + "/_hearth/account")
		p = br.submit(p, loginAction, map[string]string{"username": "bob", "password": "password"}, "")
		next := s.Config
		next.PasswordLogin = false
		if err := s.Reload(s.Config.WithReloaded(next)); err != nil {
			t.Fatal(err)
		}
		p = br.get(s.URL + "/_hearth/account")
		if q := br.submit(p, "/_hearth/account/deactivate", map[string]string{"confirm_user_id": "@bob:elsewhere"}, ""); q.status != http.StatusBadRequest {
			t.Fatalf("deactivation with the wrong user ID: %d", q.status)
		}
		if q := br.submit(p, "/_hearth/account/deactivate", map[string]string{"confirm_user_id": bob}, ""); q.status != http.StatusOK {
			t.Fatalf("deactivation by user ID: %d %s", q.status, q.body)
		}
		u, err := s.DB.GetUserByLocalpart(ctx, "bob")
		if err != nil || !u.Deactivated {
			t.Fatalf("bob after deactivation: %+v %v", u, err)
		}
	})
}

// TestPageLanguage: the pages follow Accept-Language, a choice made with
// the language switch sticks (cookie), and each page names its language.
func TestPageLanguage(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		br := newBrowser(t, s.URL) // asks for Korean first
		p := br.get(s.URL + "/_hearth/oauth2/login")
		if !strings.Contains(p.body, `<html lang="ko">`) || !strings.Contains(p.body, "hearth.test에 로그인") ||
			!strings.Contains(p.body, `href="/_hearth/oauth2/login?lang=en" lang="en" hreflang="en">English</a>`) ||
			!strings.Contains(p.body, `lang="ko" hreflang="ko" aria-current="true">한국어</a>`) {
			t.Fatalf("login page for a Korean browser: %s", p.body)
		}
		p = br.get(s.URL + "/_hearth/oauth2/login?lang=en")
		if !strings.Contains(p.body, `<html lang="en">`) || !strings.Contains(p.body, "Sign in to hearth.test") {
			t.Fatalf("login page after choosing English: %s", p.body)
		}
		p = br.get(s.URL + "/_hearth/oauth2/login?next=%2F_hearth%2Faccount")
		if !strings.Contains(p.body, `<html lang="en">`) || !strings.Contains(p.body, "lang=en&amp;next=%2F_hearth%2Faccount") {
			t.Fatalf("the choice of English did not stick: %s", p.body)
		}
		// An unknown language is ignored; an error page is translated too.
		p = br.get(s.URL + "/_hearth/oauth2/auth?client_id=nope&lang=xx")
		if p.status != http.StatusBadRequest || !strings.Contains(p.body, `<html lang="en">`) || !strings.Contains(p.body, "This application is not registered") {
			t.Fatalf("error page: %d %s", p.status, p.body)
		}
		p = br.get(s.URL + "/_hearth/oauth2/auth?client_id=nope&lang=ko")
		if !strings.Contains(p.body, "이 애플리케이션은 이 서버에 등록되어 있지 않습니다") || !strings.Contains(p.body, "문제가 발생했습니다") {
			t.Fatalf("Korean error page: %s", p.body)
		}
	})
}
