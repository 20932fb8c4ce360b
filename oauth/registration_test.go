package oauth_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestClientRegistrationRules checks the spec's client metadata and
// redirect URI rules (client-server API, Client registration), with its
// own examples of valid and invalid URIs for https://example.com/.
func TestClientRegistrationRules(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		reg := func(md map[string]any) hearthtest.Response {
			return s.Do(t, "POST", registerPath, "", md)
		}
		client := func(appType string, uris ...string) map[string]any {
			md := map[string]any{"client_uri": "https://example.com/", "redirect_uris": uris}
			if appType != "" {
				md["application_type"] = appType
			}
			return md
		}
		for _, c := range []struct {
			md      map[string]any
			errcode string // "" for 201
		}{
			// Web clients (application_type defaults to web).
			{client("", "https://example.com/callback"), ""},
			{client("web", "https://app.example.com/callback"), ""},
			{client("web", "https://example.com:5173/?query=value"), ""},
			{client("web", "https://example.com/callback#fragment"), "invalid_redirect_uri"},
			{client("web", "http://example.com/callback"), "invalid_redirect_uri"},
			{client("web", "http://localhost/"), "invalid_redirect_uri"},
			{client("web", "https://app.com/callback"), "invalid_redirect_uri"},
			{client("web", "https://user:pw@example.com/callback"), "invalid_redirect_uri"},
			{client("web", "com.example.app:/callback"), "invalid_redirect_uri"},
			// Native clients.
			{client("native", "com.example.app:/callback"), ""},
			{client("native", "com.example:/"), ""},
			{client("native", "com.example:callback"), ""},
			{client("native", "http://localhost/callback"), ""},
			{client("native", "http://127.0.0.1/callback"), ""},
			{client("native", "http://[::1]/callback"), ""},
			{client("native", "https://example.com/claimed"), ""},
			{client("native", "example:/callback"), "invalid_redirect_uri"},
			{client("native", "com.example.app://callback"), "invalid_redirect_uri"},
			{client("native", "https://localhost/callback"), "invalid_redirect_uri"},
			{client("native", "http://localhost:1234/callback"), "invalid_redirect_uri"},
			// Metadata rules.
			{map[string]any{"redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "http://example.com/", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://u:p@example.com/", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/", "logo_uri": "https://evil.org/logo.png", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/", "tos_uri#fr": "http://example.com/tos", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/", "policy_uri": "https://u:p@example.com/p", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/", "application_type": "desktop", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/", "token_endpoint_auth_method": "client_secret_basic", "redirect_uris": []string{"https://example.com/cb"}}, "invalid_client_metadata"},
			{map[string]any{"client_uri": "https://example.com/"}, "invalid_redirect_uri"}, // authorization_code needs a redirect URI
			{map[string]any{"client_uri": "https://example.com/", "grant_types": []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"}}, ""},
			{map[string]any{"client_uri": 7}, "invalid_client_metadata"},
		} {
			r := reg(c.md)
			if c.errcode == "" {
				if r.Status != http.StatusCreated || r.JSON["client_id"] == "" || r.JSON["client_uri"] != c.md["client_uri"] {
					t.Errorf("%v: %d %s, want 201", c.md, r.Status, r.Body)
				}
				continue
			}
			if r.Status != http.StatusBadRequest || r.JSON["error"] != c.errcode {
				t.Errorf("%v: %d %s, want 400 %s", c.md, r.Status, r.Body, c.errcode)
			}
		}
		hearthtest.Expect(t, s.Do(t, "POST", registerPath, "", "not json"), http.StatusBadRequest, "")
	})
}

// TestAuthorizeRequests checks what the authorization endpoint does with
// bad requests (shown, or sent back to the client), CSRF on the forms,
// denial, and sign-up with prompt=create.
func TestAuthorizeRequests(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil) // registration open
		s.RegisterUser(t, "alice")
		md := metadata(t, s)
		if !contains(md["prompt_values_supported"], "create") {
			t.Fatalf("prompt=create not offered with open registration: %v", md["prompt_values_supported"])
		}
		clientID := nativeClient(t, s)
		conf := clientConfig(md, clientID, "DEVICEAAAA1")
		verifier := oauth2.GenerateVerifier()
		br := newBrowser(t, s.URL)
		pkce := oauth2.S256ChallengeOption(verifier)

		// Unknown client or unregistered redirect URI: an error page, no redirect.
		bad := *conf
		bad.ClientID = "nope"
		if p := br.get(bad.AuthCodeURL("st", pkce)); p.status != http.StatusBadRequest || p.left != nil {
			t.Fatalf("unknown client: %d %v", p.status, p.left)
		}
		bad = *conf
		bad.RedirectURL = "http://127.0.0.1:1/other"
		if p := br.get(bad.AuthCodeURL("st", pkce)); p.status != http.StatusBadRequest || p.left != nil {
			t.Fatalf("unregistered redirect URI: %d %v", p.status, p.left)
		}
		// Other errors go back to the client with the state.
		backWith := func(u, wantErr string) {
			t.Helper()
			p := br.get(u)
			if p.left == nil || p.left.Query().Get("error") != wantErr || p.left.Query().Get("state") != "st" {
				t.Fatalf("%s: %d %v, want error %s", u, p.status, p.left, wantErr)
			}
		}
		backWith(conf.AuthCodeURL("st"), "invalid_request")                                                                                                                    // no PKCE
		backWith(conf.AuthCodeURL("st", oauth2.SetAuthURLParam("code_challenge", verifier[:43]), oauth2.SetAuthURLParam("code_challenge_method", "plain")), "invalid_request") // plain PKCE
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("scope", scopeAPI)), "invalid_scope")                                                                     // no device
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("scope", scopeAPI+" "+scopeDevice+"A "+scopeDevice+"B")), "invalid_scope")
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("scope", scopeAPI+" "+scopeDevice+"bad/id")), "invalid_scope")
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("scope", scopeAPI+" "+scopeDevice+"D openid")), "invalid_scope")
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("response_type", "token")), "unsupported_response_type")
		backWith(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("prompt", "none")), "login_required")
		if p := br.get(conf.AuthCodeURL("", pkce)); p.left == nil || p.left.Query().Get("error") != "invalid_request" {
			t.Fatalf("no state: %d %v", p.status, p.left)
		}
		// Fragment response mode puts the answer in the fragment.
		p := br.get(conf.AuthCodeURL("st", oauth2.SetAuthURLParam("response_mode", "fragment")))
		if p.left == nil || p.left.RawQuery != "" || !strings.Contains(p.left.Fragment, "error=invalid_request") {
			t.Fatalf("fragment error: %v", p.left)
		}

		// CSRF: a sign-in form without the token, or from another origin, is refused.
		p = br.get(conf.AuthCodeURL("st", pkce))
		if p.url.Path != loginAction {
			t.Fatalf("expected sign-in page: %s", p.url)
		}
		checkPageHeaders(t, p)
		noCSRF := p
		noCSRF.forms = []form{{action: loginAction, fields: url.Values{"next": p.forms[0].fields["next"]}}}
		if q := br.submit(noCSRF, loginAction, map[string]string{"username": "alice", "password": "password", "csrf": "x"}, ""); q.status != http.StatusForbidden {
			t.Fatalf("login without CSRF token: %d", q.status)
		}
		fresh := newBrowser(t, s.URL) // has no CSRF cookie at all
		if q := fresh.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, ""); q.status != http.StatusForbidden {
			t.Fatalf("login with another browser's CSRF token: %d", q.status)
		}

		// Deny sends access_denied back.
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		p = br.submit(p, consentForm, nil, "action=deny")
		if p.left == nil || p.left.Query().Get("error") != "access_denied" || p.left.Query().Get("state") != "st" {
			t.Fatalf("deny: %d %v", p.status, p.left)
		}

		// prompt=create: the sign-up page, then consent, then a token of the new account.
		br2 := newBrowser(t, s.URL)
		p = br2.get(conf.AuthCodeURL("st", pkce, oauth2.SetAuthURLParam("prompt", "create")))
		if p.url.Path != "/_hearth/oauth2/register-account" {
			t.Fatalf("prompt=create: %s %d", p.url, p.status)
		}
		q := br2.submit(p, "/_hearth/oauth2/register-account", map[string]string{"username": "alice", "password": "pw1", "password2": "pw1"}, "")
		if q.status != http.StatusBadRequest || !strings.Contains(q.body, "이미 사용 중인 사용자 이름") {
			t.Fatalf("registering a taken name: %d %s", q.status, q.body)
		}
		p = br2.submit(q, "/_hearth/oauth2/register-account", map[string]string{"username": "carol", "password": "pw1", "password2": "pw1"}, "")
		p = br2.submit(p, consentForm, nil, "action=allow")
		tok, err := conf.Exchange(ctx, p.left.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange after sign-up: %v", err)
		}
		if r := whoami(t, s, tok.AccessToken); r.JSON["user_id"] != "@carol:hearth.test" || r.JSON["device_id"] != "DEVICEAAAA1" {
			t.Fatalf("whoami after sign-up: %s", r.Body)
		}
		// The same device scope again reuses the device: the old token dies.
		p = br2.get(conf.AuthCodeURL("st2", pkce))
		p = br2.submit(p, consentForm, nil, "action=allow")
		tok2, err := conf.Exchange(ctx, p.left.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("second exchange: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, whoami(t, s, tok2.AccessToken), http.StatusOK, "")
		if r := s.Do(t, "GET", "/_matrix/client/v3/devices", tok2.AccessToken, nil); strings.Count(string(r.Body), "DEVICEAAAA1") != 1 {
			t.Fatalf("devices: %s", r.Body)
		}
	})
}

// TestRegistrationModes: prompt=create is offered only when registration
// is open or by token, and a token is used once.
func TestRegistrationModes(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		closed := hearthtest.NewServer(t, b, func(c *config.Config) { c.Registration = config.RegistrationClosed })
		if md := metadata(t, closed); md["prompt_values_supported"] != nil {
			t.Fatalf("prompt=create offered with registration closed")
		}
		if p := newBrowser(t, closed.URL).get(closed.URL + "/_hearth/oauth2/register-account"); p.status != http.StatusForbidden {
			t.Fatalf("sign-up page with registration closed: %d", p.status)
		}

		s := hearthtest.NewServer(t, b, func(c *config.Config) { c.Registration = config.RegistrationToken })
		one := int64(1)
		if _, err := s.Accounts.CreateRegistrationToken(ctx, accounts.NewRegistrationToken{Token: "tok1", UsesAllowed: &one}); err != nil {
			t.Fatal(err)
		}
		br := newBrowser(t, s.URL)
		p := br.get(s.URL + "/_hearth/oauth2/register-account")
		if !strings.Contains(p.body, `name="token"`) {
			t.Fatalf("token field missing: %s", p.body)
		}
		q := br.submit(p, "/_hearth/oauth2/register-account", map[string]string{"username": "dave", "password": "a", "password2": "a", "token": "wrong"}, "")
		if q.status != http.StatusForbidden {
			t.Fatalf("wrong registration token: %d %s", q.status, q.body)
		}
		q = br.submit(q, "/_hearth/oauth2/register-account", map[string]string{"username": "dave", "password": "a", "password2": "a", "token": "tok1"}, "")
		if q.url.Path != "/_hearth/account" || q.status != http.StatusOK {
			t.Fatalf("sign-up with token: %s %d %s", q.url, q.status, q.body)
		}
		br3 := newBrowser(t, s.URL)
		p = br3.get(s.URL + "/_hearth/oauth2/register-account")
		q = br3.submit(p, "/_hearth/oauth2/register-account", map[string]string{"username": "erin", "password": "a", "password2": "a", "token": "tok1"}, "")
		if q.status != http.StatusForbidden {
			t.Fatalf("used-up registration token: %d", q.status)
		}
	})
}
