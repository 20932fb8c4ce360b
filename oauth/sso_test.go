package oauth_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/oauth"
	"github.com/hearth-matrix/hearth/storage"
)

// Company SSO against a real OpenID provider, Ory Hydra, which .ci/run
// builds into the tool cache (.ci/build-hydra.sh). The test plays Hydra's
// login and consent app, so each sign-in says which identity and claims
// the provider vouches for.

const hydraVersion = "v2.3.0"

// hydraBinary finds Hydra: $HEARTH_HYDRA, or the tool cache. In CI it
// must be there; elsewhere the test is skipped without it.
func hydraBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("HEARTH_HYDRA"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "hearth-tools", "bin", "hydra")
	ver, _ := os.ReadFile(p + ".version")
	if _, err := os.Stat(p); err == nil && strings.TrimSpace(string(ver)) == hydraVersion {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("Hydra %s is not at %s: .ci/run builds it (.ci/build-hydra.sh)", hydraVersion, p)
	}
	t.Skipf("Hydra %s is not at %s: build it with .ci/build-hydra.sh", hydraVersion, p)
	return ""
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// identity is who the provider signs in next: its subject and claims.
type identity struct {
	sub    string
	claims map[string]any
}

// hydra is a running Hydra with the test's login and consent app.
type hydra struct {
	public, admin, issuer string
	mu                    sync.Mutex
	next                  identity
}

func startHydra(t *testing.T) *hydra {
	bin := hydraBinary(t)
	h := &hydra{}
	app := httptest.NewServer(http.HandlerFunc(h.serveApp))
	t.Cleanup(app.Close)
	pub, adm := freePort(t), freePort(t)
	h.public, h.admin = "http://127.0.0.1:"+pub, "http://127.0.0.1:"+adm
	cmd := exec.Command(bin, "serve", "all", "--dev")
	cmd.Env = append(os.Environ(), "DSN=memory", "SECRETS_SYSTEM=a-system-secret-of-32-characters-or-more",
		"URLS_SELF_ISSUER="+h.public+"/", "URLS_LOGIN="+app.URL+"/login", "URLS_CONSENT="+app.URL+"/consent",
		"SERVE_PUBLIC_HOST=127.0.0.1", "SERVE_PUBLIC_PORT="+pub, "SERVE_ADMIN_HOST=127.0.0.1", "SERVE_ADMIN_PORT="+adm,
		"LOG_LEVEL=warn", "SQA_OPT_OUT=true")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting hydra: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("hydra output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(h.public + "/.well-known/openid-configuration")
		if err == nil {
			var d struct{ Issuer string }
			_ = json.NewDecoder(resp.Body).Decode(&d)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && d.Issuer != "" {
				h.issuer = d.Issuer
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hydra did not start: %v\n%s", err, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	return h
}

func (h *hydra) signInAs(id identity) {
	h.mu.Lock()
	h.next = id
	h.mu.Unlock()
}

// adminCall calls Hydra's admin API with a JSON body and decodes the answer.
func (h *hydra) adminCall(method, path string, body, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequest(method, h.admin+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// serveApp is Hydra's login and consent app: it accepts at once, as the
// identity set by signInAs, with its claims in the ID token.
func (h *hydra) serveApp(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	id := h.next
	h.mu.Unlock()
	var redirect struct {
		RedirectTo string `json:"redirect_to"`
	}
	var err error
	switch r.URL.Path {
	case "/login":
		c := url.QueryEscape(r.URL.Query().Get("login_challenge"))
		err = h.adminCall("PUT", "/admin/oauth2/auth/requests/login/accept?login_challenge="+c, map[string]any{"subject": id.sub}, &redirect)
	case "/consent":
		c := url.QueryEscape(r.URL.Query().Get("consent_challenge"))
		var cr struct {
			RequestedScope []string `json:"requested_scope"`
		}
		if err = h.adminCall("GET", "/admin/oauth2/auth/requests/consent?consent_challenge="+c, nil, &cr); err == nil {
			err = h.adminCall("PUT", "/admin/oauth2/auth/requests/consent/accept?consent_challenge="+c, map[string]any{
				"grant_scope": cr.RequestedScope, "session": map[string]any{"id_token": id.claims}}, &redirect)
		}
	default:
		http.NotFound(w, r)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.Redirect(w, r, redirect.RedirectTo, http.StatusFound)
}

// client registers an OAuth client at Hydra; its redirect URI is set
// once Hearth's address is known (setRedirect).
func (h *hydra) client(t *testing.T, secret string) string {
	t.Helper()
	var c struct {
		ClientID string `json:"client_id"`
	}
	if err := h.adminCall("POST", "/admin/clients", map[string]any{"client_secret": secret, "redirect_uris": []string{"http://127.0.0.1/unset"},
		"grant_types": []string{"authorization_code"}, "response_types": []string{"code"}, "scope": "openid profile email",
		"token_endpoint_auth_method": "client_secret_basic"}, &c); err != nil {
		t.Fatal(err)
	}
	return c.ClientID
}

func (h *hydra) setRedirect(t *testing.T, clientID, redirectURI string) {
	t.Helper()
	var out map[string]any
	if err := h.adminCall("PATCH", "/admin/clients/"+clientID, []map[string]any{
		{"op": "replace", "path": "/redirect_uris", "value": []string{redirectURI}}}, &out); err != nil {
		t.Fatal(err)
	}
}

// ssoBrowser is the test's browser, following redirects through Hearth,
// Hydra and its app, and stopping at any other host (the client's).
func ssoBrowser(t *testing.T, s *hearthtest.Server, h *hydra) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(s.URL)
	pub, _ := url.Parse(h.public)
	// English: the test reads the pages' messages.
	b := &browser{t: t, base: base, acceptLanguage: "en"}
	b.client = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != base.Host && req.URL.Host != pub.Host && !strings.HasPrefix(req.URL.Path, "/login") && !strings.HasPrefix(req.URL.Path, "/consent") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

// ssoServer starts Hearth with three providers on one Hydra: corp links
// by verified email and always makes accounts; strict links nothing and
// makes none; names links by localpart.
func ssoServer(t *testing.T, b hearthtest.Backend, h *hydra, modify func(*config.Config)) *hearthtest.Server {
	secretFile := filepath.Join(t.TempDir(), "corp-secret")
	if err := os.WriteFile(secretFile, []byte("corp-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HEARTH_TEST_STRICT_SECRET", "strict-secret-value")
	ids := map[string]string{"corp": h.client(t, "corp-secret-value"), "strict": h.client(t, "strict-secret-value"), "names": h.client(t, "names-secret-value")}
	s := hearthtest.NewServer(t, b, func(c *config.Config) {
		c.Registration = config.RegistrationClosed
		c.SSOProviders = config.SSOProviders{
			{ID: "corp", Name: "Corp SSO", Brand: "corp", Issuer: h.issuer, ClientID: ids["corp"], ClientSecretFile: secretFile,
				LinkExisting: config.SSOLinkEmail, Register: config.SSORegisterAlways},
			{ID: "strict", Name: "Strict SSO", Issuer: h.issuer, ClientID: ids["strict"], ClientSecretEnv: "HEARTH_TEST_STRICT_SECRET"},
			{ID: "names", Name: "Names SSO", Issuer: h.issuer, ClientID: ids["names"], ClientSecret: "names-secret-value",
				LinkExisting: config.SSOLinkLocalpart, Register: config.SSORegisterNever},
		}
		if modify != nil {
			modify(c)
		}
	})
	for id, clientID := range ids {
		h.setRedirect(t, clientID, s.URL+"/_hearth/oauth2/upstream/"+id+"/callback")
	}
	return s
}

const clientRedirect = "https://client.example/sso-done?session=abc"

// legacySSO runs m.login.sso from /login/sso/redirect/{idp} to the
// confirmation page, and returns that page.
func legacySSO(t *testing.T, br *browser, s *hearthtest.Server, idp string) page {
	t.Helper()
	return br.get(s.URL + "/_matrix/client/v3/login/sso/redirect/" + idp + "?redirectUrl=" + url.QueryEscape(clientRedirect) + "&action=login")
}

// confirm continues on the confirmation page and returns the login token
// handed to the client.
func confirm(t *testing.T, br *browser, p page) string {
	t.Helper()
	if p.status != http.StatusOK || p.url.Path != "/_hearth/oauth2/sso-complete" || !strings.Contains(p.body, "client.example") {
		t.Fatalf("expected the confirmation page, got %s %d: %s", p.url, p.status, p.body)
	}
	checkPageHeaders(t, p)
	p = br.submit(p, "/_hearth/oauth2/sso-complete", nil, "action=continue")
	if p.left == nil || p.left.Host != "client.example" || p.left.Path != "/sso-done" || p.left.Query().Get("session") != "abc" {
		t.Fatalf("not sent back to the client: %d %v %s", p.status, p.left, p.body)
	}
	tok := p.left.Query().Get("loginToken")
	if tok == "" {
		t.Fatalf("no loginToken in %s", p.left)
	}
	return tok
}

func tokenLogin(t *testing.T, s *hearthtest.Server, tok string) hearthtest.Response {
	t.Helper()
	return s.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": tok})
}

// refused expects an error page with status and text.
func refused(t *testing.T, p page, status int, text string) {
	t.Helper()
	if p.status != status || !strings.Contains(p.body, text) {
		t.Fatalf("expected %d with %q, got %s %d: %s", status, text, p.url, p.status, p.body)
	}
}

func TestCompanySSO(t *testing.T) {
	h := startHydra(t)
	n := 0
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		n++
		sub := func(name string) string { return fmt.Sprintf("%s-%d", name, n) }
		s := ssoServer(t, b, h, nil)

		// GET /login offers m.login.sso with the providers.
		r := s.Do(t, "GET", "/_matrix/client/v3/login", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), `{"identity_providers":[{"brand":"corp","id":"corp","name":"Corp SSO"},{"id":"strict","name":"Strict SSO"},{"id":"names","name":"Names SSO"}],"oauth_aware_preferred":true,"type":"m.login.sso"}`) {
			t.Fatalf("login flows: %s", r.Body)
		}

		// A new identity through corp: registration is closed, but corp
		// makes accounts; the claims give the localpart (mapped), the
		// display name and the verified address.
		br := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("carol"), map[string]any{"preferred_username": "Carol.Smith@corp", "name": "Carol Smith",
			"email": "Carol@corp.example", "email_verified": true}})
		tok := confirm(t, br, legacySSO(t, br, s, "corp"))
		r = tokenLogin(t, s, tok)
		hearthtest.Expect(t, r, http.StatusOK, "")
		carol := "@carol.smith=40corp:hearth.test"
		if r.JSON["user_id"] != carol || r.JSON["access_token"] == nil {
			t.Fatalf("login: %s", r.Body)
		}
		hearthtest.Expect(t, tokenLogin(t, s, tok), http.StatusForbidden, "M_FORBIDDEN") // single use
		carolToken := r.JSON["access_token"].(string)
		if p := s.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(carol)+"/displayname", carolToken, nil); p.JSON["displayname"] != "Carol Smith" {
			t.Fatalf("display name: %s", p.Body)
		}
		if tp := s.Do(t, "GET", "/_matrix/client/v3/account/3pid", carolToken, nil); !strings.Contains(string(tp.Body), `"address":"carol@corp.example"`) {
			t.Fatalf("3pids: %s", tp.Body)
		}

		// The same subject signs in to the same account in a new browser,
		// whatever its user name has become: the link is issuer + sub.
		br2 := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("carol"), map[string]any{"preferred_username": "csmith", "email": "carol@corp.example", "email_verified": true}})
		r = tokenLogin(t, s, confirm(t, br2, legacySSO(t, br2, s, "corp")))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != carol {
			t.Fatalf("second sign-in: %s", r.Body)
		}
		carolDevice2 := r.JSON["device_id"].(string)

		// Linking by verified email: dave has a password account with an
		// address. An unverified claim does not link (and the localpart
		// is taken, so no account is made); a verified one does.
		dave, _ := s.RegisterUser(t, "dave")
		if err := s.Server.DB.WriteTx(t.Context(), func(tx *sql.Tx) error {
			return storage.InsertThreePID(t.Context(), tx, storage.ThreePID{Medium: "email", Address: "dave@corp.example", UserID: dave, ValidatedTS: 1, AddedTS: 1})
		}); err != nil {
			t.Fatal(err)
		}
		br3 := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("dave"), map[string]any{"preferred_username": "dave", "email": "dave@corp.example", "email_verified": false}})
		refused(t, legacySSO(t, br3, s, "corp"), http.StatusConflict, "exists already and is not linked")
		h.signInAs(identity{sub("dave"), map[string]any{"preferred_username": "dave", "email": "dave@corp.example", "email_verified": true}})
		r = tokenLogin(t, s, confirm(t, br3, legacySSO(t, br3, s, "corp")))
		if r.JSON["user_id"] != dave {
			t.Fatalf("linked by email: %s", r.Body)
		}
		// The Synapse admin API finds accounts by their linked identities.
		admin, err := s.Server.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "admin", Password: "password", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		if l := s.Do(t, "GET", "/_synapse/admin/v1/auth_providers/corp/users/"+sub("dave"), admin.AccessToken, nil); l.JSON["user_id"] != dave {
			t.Fatalf("admin lookup by external ID: %s", l.Body)
		}
		hearthtest.Expect(t, s.Do(t, "GET", "/_synapse/admin/v1/auth_providers/strict/users/"+sub("dave"), admin.AccessToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		if u := s.Do(t, "GET", "/_synapse/admin/v2/users/"+url.PathEscape(dave), admin.AccessToken, nil); !strings.Contains(string(u.Body), `"external_ids":[{"auth_provider":"corp","external_id":"`+sub("dave")+`"}]`) {
			t.Fatalf("admin user's external_ids: %s", u.Body)
		}

		// strict (the defaults: link never, register auto with
		// registration closed) refuses unknown identities, even one named
		// like an existing account; a linked identity signs in through it.
		br4 := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("erin"), map[string]any{"preferred_username": "dave", "email": "dave@corp.example", "email_verified": true}})
		refused(t, legacySSO(t, br4, s, "strict"), http.StatusForbidden, "accounts cannot be created")
		h.signInAs(identity{sub("carol"), map[string]any{"preferred_username": "whoever"}})
		r = tokenLogin(t, s, confirm(t, br4, legacySSO(t, br4, s, "strict")))
		if r.JSON["user_id"] != carol {
			t.Fatalf("linked identity through strict: %s", r.Body)
		}

		// names links by localpart and never registers.
		frank, _ := s.RegisterUser(t, "frank")
		br5 := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("nobody"), map[string]any{"preferred_username": "nobody-here"}})
		refused(t, legacySSO(t, br5, s, "names"), http.StatusForbidden, "accounts cannot be created")
		h.signInAs(identity{sub("frank"), map[string]any{"preferred_username": "Frank"}})
		r = tokenLogin(t, s, confirm(t, br5, legacySSO(t, br5, s, "names")))
		if r.JSON["user_id"] != frank {
			t.Fatalf("linked by localpart: %s", r.Body)
		}

		// A locked or deactivated account is refused.
		if err := s.Server.DB.WriteTx(t.Context(), func(tx *sql.Tx) error { return storage.SetUserLocked(t.Context(), tx, frank, true) }); err != nil {
			t.Fatal(err)
		}
		refused(t, legacySSO(t, ssoBrowser(t, s, h), s, "names"), http.StatusForbidden, "is locked")

		// The OAuth 2.0 authorization code flow: the sign-in page offers
		// the providers; after the upstream sign-in, consent, then code.
		md := metadata(t, s)
		conf := clientConfig(md, nativeClient(t, s), "SSODEVICE1")
		verifier := oauth2.GenerateVerifier()
		br6 := ssoBrowser(t, s, h)
		p := br6.get(conf.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("response_mode", "query")))
		if p.url.Path != loginAction || !strings.Contains(p.body, "Corp SSO") {
			t.Fatalf("sign-in page without providers: %s %s", p.url, p.body)
		}
		link := providerLink(t, p, "corp")
		h.signInAs(identity{sub("carol"), map[string]any{"preferred_username": "x"}})
		p = br6.get(link)
		if p.url.Path != consentForm || p.status != http.StatusOK {
			t.Fatalf("expected consent after the upstream sign-in, got %s %d: %s", p.url, p.status, p.body)
		}
		p = br6.submit(p, consentForm, nil, "action=allow")
		if p.left == nil || p.left.Query().Get("state") != "st" {
			t.Fatalf("no callback: %d %s", p.status, p.body)
		}
		ot, err := conf.Exchange(ctx, p.left.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if w := whoami(t, s, ot.AccessToken); w.JSON["user_id"] != carol || w.JSON["device_id"] != "SSODEVICE1" {
			t.Fatalf("whoami: %s", w.Body)
		}

		// The device grant: the page of the user code signs in through
		// the provider too, then approves.
		da, err := conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		brD := ssoBrowser(t, s, h)
		p = brD.get(da.VerificationURIComplete)
		p = brD.get(providerLink(t, p, "corp"))
		if p.url.Path != "/_hearth/oauth2/link" || !strings.Contains(p.body, da.UserCode) {
			t.Fatalf("expected the approval page after the upstream sign-in, got %s %d: %s", p.url, p.status, p.body)
		}
		p = brD.submit(p, "/_hearth/oauth2/link", nil, "action=allow")
		dt, err := conf.DeviceAccessToken(ctx, da)
		if err != nil {
			t.Fatalf("device access token: %v", err)
		}
		if w := whoami(t, s, dt.AccessToken); w.JSON["user_id"] != carol {
			t.Fatalf("whoami after the device grant: %s", w.Body)
		}

		// Bad state: another state than this browser's, a state without
		// its cookie, a state used twice, and an unknown provider.
		br7 := ssoBrowser(t, s, h)
		start := noFollow(t, br7, s.URL+"/_hearth/oauth2/upstream/corp?next=/_hearth/account")
		state := start.Query().Get("state")
		if state == "" || start.Query().Get("nonce") == "" || start.Query().Get("code_challenge_method") != "S256" {
			t.Fatalf("upstream request without state, nonce or PKCE: %s", start)
		}
		cb := s.URL + "/_hearth/oauth2/upstream/corp/callback?code=x&state="
		refused(t, br7.get(cb+"forged"), http.StatusBadRequest, "not started in this browser")
		refused(t, ssoBrowser(t, s, h).get(cb+url.QueryEscape(state)), http.StatusBadRequest, "not started in this browser")
		refused(t, br7.get(s.URL+"/_matrix/client/v3/login/sso/redirect/nope?redirectUrl="+url.QueryEscape(clientRedirect)), http.StatusNotFound, "not known")
		// The real answer, replayed: the second time is refused.
		br8 := ssoBrowser(t, s, h)
		h.signInAs(identity{sub("carol"), nil})
		start = noFollow(t, br8, s.URL+"/_hearth/oauth2/upstream/corp?next=/_hearth/account")
		answer := followToCallback(t, br8, start.String())
		if p := br8.get(answer); p.url.Path != "/_hearth/account" {
			t.Fatalf("sign-in did not reach the account page: %s %d %s", p.url, p.status, p.body)
		}
		jar, _ := cookiejar.New(nil)
		br8.client.Jar = jar // the cookie is gone anyway; a fresh jar is a replaying attacker
		refused(t, br8.get(answer), http.StatusBadRequest, "not started in this browser")

		// Bad nonce: an ID token minted for another sign-in (here: the
		// stored nonce no longer matches the one sent) is refused.
		br9 := ssoBrowser(t, s, h)
		start = noFollow(t, br9, s.URL+"/_hearth/oauth2/upstream/corp?next=/_hearth/account")
		if err := s.Server.DB.WriteTx(t.Context(), func(tx *sql.Tx) error {
			_, err := tx.ExecContext(t.Context(), `UPDATE sso_requests SET nonce = 'another-sign-in'`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		refused(t, br9.get(followToCallback(t, br9, start.String())), http.StatusForbidden, "could not be verified")

		// A code of another sign-in (code injection) fails PKCE at the provider.
		brA, brB := ssoBrowser(t, s, h), ssoBrowser(t, s, h)
		startA := noFollow(t, brA, s.URL+"/_hearth/oauth2/upstream/corp?next=/_hearth/account")
		startB := noFollow(t, brB, s.URL+"/_hearth/oauth2/upstream/corp?next=/_hearth/account")
		codeB, _ := url.Parse(followToCallback(t, brB, startB.String()))
		refused(t, brA.get(cb+url.QueryEscape(startA.Query().Get("state"))+"&code="+url.QueryEscape(codeB.Query().Get("code"))),
			http.StatusBadGateway, "did not confirm the sign-in")

		// UIA for an account without a password: the m.login.sso stage,
		// passed on its fallback page by signing in again, as the same
		// identity only.
		del := func(auth map[string]any) hearthtest.Response {
			return s.Do(t, "DELETE", "/_matrix/client/v3/devices/"+carolDevice2, carolToken, map[string]any{"auth": auth})
		}
		r = del(nil)
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), `{"stages":["m.login.sso"]}`) {
			t.Fatalf("UIA without the SSO stage: %d %s", r.Status, r.Body)
		}
		uia, _ := r.JSON["session"].(string)
		if r = del(map[string]any{"type": "m.login.sso", "session": uia}); r.Status != http.StatusUnauthorized {
			t.Fatalf("SSO stage before the fallback: %d %s", r.Status, r.Body)
		}
		brU := ssoBrowser(t, s, h)
		p = brU.get(s.URL + "/_matrix/client/v3/auth/m.login.sso/fallback/web?session=" + url.QueryEscape(uia))
		if p.status != http.StatusOK || !strings.Contains(p.body, "Corp SSO") || strings.Contains(p.body, "Names SSO") {
			t.Fatalf("fallback page: %d %s", p.status, p.body)
		}
		i := strings.Index(p.body, `href="/_matrix/client/v3/auth/m.login.sso/fallback/web?`)
		rest := p.body[i+len(`href="`):]
		fallbackLink, _ := p.url.Parse(strings.ReplaceAll(rest[:strings.Index(rest, `"`)], "&amp;", "&"))
		if loc := noFollow(t, brU, fallbackLink.String()); loc.Query().Get("prompt") != "login" {
			t.Fatalf("re-authentication without prompt=login: %s", loc)
		}
		h.signInAs(identity{sub("dave"), nil})
		refused(t, brU.get(fallbackLink.String()), http.StatusForbidden, "as someone else")
		hearthtest.Expect(t, del(map[string]any{"session": uia}), http.StatusUnauthorized, "")
		h.signInAs(identity{sub("carol"), nil})
		if p = brU.get(fallbackLink.String()); p.status != http.StatusOK || !strings.Contains(p.body, "Confirmed") {
			t.Fatalf("fallback sign-in: %d %s", p.status, p.body)
		}
		hearthtest.Expect(t, del(map[string]any{"type": "m.login.sso", "session": uia}), http.StatusOK, "")

		// With password login off, a linked account that has a password
		// too is offered the SSO stage only, and its password is refused.
		if err := s.Server.DB.WriteTx(t.Context(), func(tx *sql.Tx) error {
			hash, err := s.Accounts.Passwords.Hash(t.Context(), "carol-password")
			if err != nil {
				return err
			}
			return storage.SetPasswordHash(t.Context(), tx, carol, hash)
		}); err != nil {
			t.Fatal(err)
		}
		noPassword := s.Config
		noPassword.PasswordLogin = false
		if err := s.Reload(s.Config.WithReloaded(noPassword)); err != nil {
			t.Fatal(err)
		}
		logout := func(auth map[string]any) hearthtest.Response {
			return s.Do(t, "POST", "/_matrix/client/v3/account/password", carolToken, map[string]any{"new_password": "x", "auth": auth})
		}
		if r = logout(nil); r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), `"flows":[{"stages":["m.login.sso"]}]`) {
			t.Fatalf("UIA flows with password login off: %d %s", r.Status, r.Body)
		}
		pw := map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": carol}, "password": "carol-password"}
		if r = logout(pw); r.Status != http.StatusUnauthorized || r.ErrCode() != "M_FORBIDDEN" || !strings.Contains(string(r.Body), `"flows":[{"stages":["m.login.sso"]}]`) {
			t.Fatalf("password stage with password login off: %d %s", r.Status, r.Body)
		}

		// A deactivated account is refused, and its name is not given again.
		if err := s.Server.DB.WriteTx(t.Context(), func(tx *sql.Tx) error { return storage.DeactivateUser(t.Context(), tx, carol, false) }); err != nil {
			t.Fatal(err)
		}
		h.signInAs(identity{sub("carol"), nil})
		refused(t, legacySSO(t, ssoBrowser(t, s, h), s, "corp"), http.StatusForbidden, "has been deactivated")
		h.signInAs(identity{sub("carol-new"), map[string]any{"preferred_username": "Carol.Smith@corp"}})
		refused(t, legacySSO(t, ssoBrowser(t, s, h), s, "corp"), http.StatusConflict, "exists already")

		// redirectUrl is checked.
		refused(t, br.get(s.URL+"/_matrix/client/v3/login/sso/redirect?redirectUrl="+url.QueryEscape("javascript:alert(1)")), http.StatusBadRequest, "redirectUrl")
		refused(t, br.get(s.URL+"/_matrix/client/v3/login/sso/redirect"), http.StatusBadRequest, "redirectUrl")
	})
}

// TestSSOStartRateLimited: starting an upstream sign-in is limited per
// client address with the login limits, on every road in (the legacy
// /login/sso/redirect/{idpId} and the sign-in page's provider links share
// one bucket); a refused start is 429 with Retry-After and stores nothing.
func TestSSOStartRateLimited(t *testing.T) {
	h := startHydra(t)
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := ssoServer(t, b, h, func(c *config.Config) {
			c.RateLimits = "on"
			c.RateLimitLoginPerSecond, c.RateLimitLoginBurst = 0.01, 2
		})
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		get := func(path string) *http.Response {
			t.Helper()
			resp, err := client.Get(s.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		legacy := "/_matrix/client/v3/login/sso/redirect/corp?redirectUrl=" + url.QueryEscape(clientRedirect)
		for i, path := range []string{legacy, "/_hearth/oauth2/upstream/corp?next=/_hearth/account"} {
			resp := get(path)
			loc, _ := resp.Location()
			if resp.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), h.issuer) {
				t.Fatalf("start %d within the burst: %d %v", i, resp.StatusCode, loc)
			}
		}
		for _, path := range []string{legacy, "/_hearth/oauth2/upstream/corp?next=/_hearth/account"} {
			resp := get(path)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("start beyond the burst: %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
			}
		}
		var n int
		if err := s.Server.DB.Read().QueryRowContext(t.Context(), `SELECT COUNT(*) FROM sso_requests`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Fatalf("%d pending upstream sign-ins stored, want the 2 allowed", n)
		}
		// Without a provider in the path nothing upstream starts: the
		// sign-in page is not limited by this bucket.
		if resp := get("/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(clientRedirect)); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("/login/sso/redirect without a provider: %d", resp.StatusCode)
		}
	})
}

// providerLink is the sign-in page's link to a provider.
func providerLink(t *testing.T, p page, idp string) string {
	t.Helper()
	i := strings.Index(p.body, `href="/_hearth/oauth2/upstream/`+idp+`?`)
	if i < 0 {
		t.Fatalf("no link to %s on %s", idp, p.body)
	}
	rest := p.body[i+len(`href="`):]
	href := strings.ReplaceAll(rest[:strings.Index(rest, `"`)], "&amp;", "&")
	u, _ := p.url.Parse(href)
	return u.String()
}

// noFollow opens u without following its redirect and returns where it points.
func noFollow(t *testing.T, b *browser, u string) *url.URL {
	t.Helper()
	c := *b.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("GET %s: %d without a redirect", u, resp.StatusCode)
	}
	return loc
}

// followToCallback follows the provider's redirects from u and returns
// the URL of Hearth's callback they end at, without opening it.
func followToCallback(t *testing.T, b *browser, u string) string {
	t.Helper()
	c := *b.client
	c.CheckRedirect = func(req *http.Request, _ []*http.Request) error {
		if strings.Contains(req.URL.Path, "/_hearth/oauth2/upstream/") {
			return http.ErrUseLastResponse
		}
		return nil
	}
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || !strings.Contains(loc.Path, "/callback") {
		t.Fatalf("the provider did not send back to the callback: %d %v", resp.StatusCode, loc)
	}
	return loc.String()
}

func TestMapLocalpart(t *testing.T) {
	for in, want := range map[string]string{"Alice": "alice", "carol.smith@corp": "carol.smith=40corp", "a=b": "a=3db", "j_doe-1/x+y": "j_doe-1/x+y", "Zoë": "zo=c3=ab", " bob ": "bob"} {
		if got := oauth.MapLocalpart(in); got != want {
			t.Errorf("MapLocalpart(%q) = %q, want %q", in, got, want)
		}
	}
}

// m.login.sso without a provider: /login/sso/redirect opens Hearth's own
// sign-in page (password here), confirms, and hands a login token back;
// a cancelled confirmation hands none.
func TestSSORedirectWithPassword(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		alice, _ := s.RegisterUser(t, "alice")
		br := newBrowser(t, s.URL)
		p := br.get(s.URL + "/_matrix/client/v3/login/sso/redirect?redirectUrl=" + url.QueryEscape(clientRedirect))
		if p.url.Path != loginAction || strings.Contains(p.body, "Or sign in with") {
			t.Fatalf("expected the sign-in page without providers, got %s %d", p.url, p.status)
		}
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		tok := confirm(t, br, p)
		r := tokenLogin(t, s, tok)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != alice {
			t.Fatalf("login: %s", r.Body)
		}
		// Signed in already: straight to the confirmation; cancel goes to
		// the account page with no token.
		p = br.get(s.URL + "/_matrix/client/r0/login/sso/redirect?redirectUrl=" + url.QueryEscape(clientRedirect))
		if p.url.Path != "/_hearth/oauth2/sso-complete" {
			t.Fatalf("expected the confirmation, got %s", p.url)
		}
		p = br.submit(p, "/_hearth/oauth2/sso-complete", nil, "action=cancel")
		if p.left != nil || p.url.Path != "/_hearth/account" {
			t.Fatalf("cancel: %v %s", p.left, p.url)
		}
		// The form needs its CSRF token.
		resp, err := http.PostForm(s.URL+"/_hearth/oauth2/sso-complete", url.Values{"redirectUrl": {clientRedirect}, "action": {"continue"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("form without CSRF token: %d", resp.StatusCode)
		}
		// action=register opens the sign-up page when registration is open.
		p = newBrowser(t, s.URL).get(s.URL + "/_matrix/client/v3/login/sso/redirect?action=register&redirectUrl=" + url.QueryEscape(clientRedirect))
		if p.url.Path != "/_hearth/oauth2/register-account" {
			t.Fatalf("action=register: %s", p.url)
		}
	})
}
