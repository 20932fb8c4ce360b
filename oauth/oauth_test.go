package oauth_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/hearthtest"
)

const (
	scopeAPI     = "urn:matrix:client:api:*"
	scopeDevice  = "urn:matrix:client:device:"
	callback     = "http://127.0.0.1:38111/callback" // a native client's loopback URI, on a port it picked
	registerPath = "/_hearth/oauth2/register"
	loginAction  = "/_hearth/oauth2/login"
	consentForm  = "/_hearth/oauth2/consent"
)

// metadata fetches and checks GET /_matrix/client/v1/auth_metadata.
func metadata(t *testing.T, s *hearthtest.Server) map[string]any {
	t.Helper()
	r := s.Do(t, "GET", "/_matrix/client/v1/auth_metadata", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	for _, k := range []string{"issuer", "authorization_endpoint", "token_endpoint", "revocation_endpoint", "registration_endpoint",
		"device_authorization_endpoint", "account_management_uri"} {
		if v, _ := r.JSON[k].(string); !strings.HasPrefix(v, s.URL) {
			t.Fatalf("metadata %s = %v, want a URL of %s", k, r.JSON[k], s.URL)
		}
	}
	for k, want := range map[string]string{"response_types_supported": "code", "response_modes_supported": "fragment",
		"code_challenge_methods_supported": "S256", "grant_types_supported": "urn:ietf:params:oauth:grant-type:device_code",
		"account_management_actions_supported": "org.matrix.cross_signing_reset"} {
		if !contains(r.JSON[k], want) {
			t.Fatalf("metadata %s = %v, want it to contain %s", k, r.JSON[k], want)
		}
	}
	return r.JSON
}

func contains(list any, want string) bool {
	l, _ := list.([]any)
	for _, v := range l {
		if v == want {
			return true
		}
	}
	return false
}

// nativeClient registers a native client with a loopback redirect URI.
func nativeClient(t *testing.T, s *hearthtest.Server) string {
	t.Helper()
	r := s.Do(t, "POST", registerPath, "", map[string]any{
		"client_name": "Test app", "client_name#ko": "테스트 앱", "client_uri": "https://app.example.org/",
		"logo_uri": "https://app.example.org/logo.png", "tos_uri": "https://app.example.org/tos", "policy_uri#ko": "https://app.example.org/ko/policy",
		"redirect_uris": []string{"http://127.0.0.1/callback"}, "application_type": "native", "token_endpoint_auth_method": "none",
		"response_types": []string{"code"},
		"grant_types":    []string{"authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code", "urn:ietf:params:oauth:grant-type:token-exchange"},
	})
	hearthtest.Expect(t, r, http.StatusCreated, "")
	id, _ := r.JSON["client_id"].(string)
	if id == "" || r.JSON["client_name#ko"] != "테스트 앱" || contains(r.JSON["grant_types"], "urn:ietf:params:oauth:grant-type:token-exchange") {
		t.Fatalf("registration answer: %s", r.Body)
	}
	return id
}

func clientConfig(md map[string]any, clientID, deviceID string) *oauth2.Config {
	return &oauth2.Config{
		ClientID: clientID,
		Endpoint: oauth2.Endpoint{AuthURL: md["authorization_endpoint"].(string), TokenURL: md["token_endpoint"].(string),
			DeviceAuthURL: md["device_authorization_endpoint"].(string), AuthStyle: oauth2.AuthStyleInParams},
		RedirectURL: callback,
		Scopes:      []string{scopeAPI, scopeDevice + deviceID},
	}
}

var ctx = context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Timeout: time.Minute})

// authorize runs the browser's part of the authorization code flow and
// returns the callback's query. signIn: the browser has no session yet.
func authorize(t *testing.T, br *browser, conf *oauth2.Config, verifier, state string, signIn bool, opts ...oauth2.AuthCodeOption) url.Values {
	t.Helper()
	opts = append(opts, oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("response_mode", "query"))
	p := br.get(conf.AuthCodeURL(state, opts...))
	if signIn {
		if p.url.Path != loginAction {
			t.Fatalf("expected the sign-in page, got %s %d: %s", p.url, p.status, p.body)
		}
		// A wrong password shows the page again.
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "nope"}, "")
		if p.status != http.StatusForbidden || !strings.Contains(p.body, "사용자 이름 또는 비밀번호가 올바르지 않습니다") {
			t.Fatalf("wrong password: %d %s", p.status, p.body)
		}
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
	}
	if p.url.Path != consentForm || p.status != http.StatusOK {
		t.Fatalf("expected the consent page, got %s %d: %s", p.url, p.status, p.body)
	}
	checkPageHeaders(t, p)
	if !strings.Contains(p.body, "테스트 앱") || !strings.Contains(p.body, "https://app.example.org/tos") || !strings.Contains(p.body, "ko/policy") {
		t.Fatalf("consent page does not show the client's localized name and links: %s", p.body)
	}
	p = br.submit(p, consentForm, nil, "action=allow")
	if p.left == nil {
		t.Fatalf("consent did not go back to the client: %d %s", p.status, p.body)
	}
	if got := p.left.Scheme + "://" + p.left.Host + p.left.Path; got != callback {
		t.Fatalf("callback to %s, want %s", got, callback)
	}
	q := p.left.Query()
	if q.Get("state") != state {
		t.Fatalf("callback state %q, want %q", q.Get("state"), state)
	}
	return q
}

func checkPageHeaders(t *testing.T, p page) {
	t.Helper()
	if !strings.Contains(p.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") || p.header.Get("X-Frame-Options") != "DENY" || p.header.Get("Referrer-Policy") != "same-origin" ||
		strings.Contains(p.body, "<script") || strings.Contains(p.body, "style=") {
		t.Fatalf("page %s lacks its security headers or has inline code: %v", p.url, p.header)
	}
	for _, c := range p.header.Values("Set-Cookie") {
		if !strings.Contains(c, "HttpOnly") || !strings.Contains(c, "SameSite") {
			t.Fatalf("cookie without HttpOnly/SameSite: %s", c)
		}
	}
}

func oauthErr(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func whoami(t *testing.T, s *hearthtest.Server, token string) hearthtest.Response {
	t.Helper()
	return s.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
}

// TestAuthorizationCodeFlow drives golang.org/x/oauth2 through the
// authorization code grant with PKCE, the browser steps done by a
// form-following HTTP client, then uses, refreshes and revokes the tokens.
func TestAuthorizationCodeFlow(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		s.RegisterUser(t, "alice")
		md := metadata(t, s)
		clientID := nativeClient(t, s)
		if again := nativeClient(t, s); again != clientID {
			t.Fatalf("identical metadata registered twice: %s and %s", clientID, again)
		}
		br := newBrowser(t, s.URL)

		conf := clientConfig(md, clientID, "OAUTHDEV001")
		verifier := oauth2.GenerateVerifier()
		q := authorize(t, br, conf, verifier, "state-1", true)
		code := q.Get("code")
		if code == "" {
			t.Fatalf("no code in callback: %v", q)
		}
		// A wrong verifier is refused, and uses the code up.
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(oauth2.GenerateVerifier())); oauthErr(err) != "invalid_grant" {
			t.Fatalf("wrong verifier: %v", err)
		}
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); oauthErr(err) != "invalid_grant" {
			t.Fatalf("code after a failed exchange: %v", err)
		}
		code = authorize(t, br, conf, verifier, "state-1", false).Get("code")
		tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		if tok.RefreshToken == "" || tok.Expiry.IsZero() || tok.Extra("scope") != scopeAPI+" "+scopeDevice+"OAUTHDEV001" {
			t.Fatalf("token response: %+v scope %v", tok, tok.Extra("scope"))
		}
		r := whoami(t, s, tok.AccessToken)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" || r.JSON["device_id"] != "OAUTHDEV001" {
			t.Fatalf("whoami: %s", r.Body)
		}
		hearthtest.Expect(t, s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", tok.AccessToken, nil), http.StatusOK, "")
		// The code is single use: a second exchange fails and ends the session it started.
		if _, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier)); oauthErr(err) != "invalid_grant" {
			t.Fatalf("code reuse: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

		// A new session: the browser is still signed in, so straight to consent.
		q = authorize(t, br, conf, verifier, "state-2", false)
		tok, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusOK, "")

		// Refresh with rotation, through the library's token source.
		r1 := tok.RefreshToken
		tok.Expiry = time.Now().Add(-time.Minute)
		tok2, err := conf.TokenSource(ctx, tok).Token()
		if err != nil || tok2.AccessToken == tok.AccessToken || tok2.RefreshToken == r1 {
			t.Fatalf("refresh: %v %+v", err, tok2)
		}
		// Until the new pair is used, the old refresh token may be retried
		// (a lost response).
		retry, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: r1, Expiry: time.Now().Add(-time.Minute)}).Token()
		if err != nil {
			t.Fatalf("retrying a refresh: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, retry.AccessToken), http.StatusOK, "") // r1's generation is now spent
		// Presenting r1 again is reuse: the session ends.
		if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: r1, Expiry: time.Now().Add(-time.Minute)}).Token(); oauthErr(err) != "invalid_grant" {
			t.Fatalf("refresh token reuse: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, retry.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

		// Revocation (RFC 7009) of the access token ends the session; an
		// unknown token is 200 too.
		q = authorize(t, br, conf, verifier, "state-3", false)
		tok, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		revoke := func(token string) hearthtest.Response {
			return formPost(t, s, "/_hearth/oauth2/revoke", url.Values{"token": {token}, "token_type_hint": {"access_token"}, "client_id": {clientID}})
		}
		hearthtest.Expect(t, revoke(tok.AccessToken), http.StatusOK, "")
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token(); oauthErr(err) != "invalid_grant" {
			t.Fatalf("refresh after revocation: %v", err)
		}
		hearthtest.Expect(t, revoke("mat_unknown"), http.StatusOK, "")

		// Logging out through the client API revokes the OAuth tokens too.
		q = authorize(t, br, conf, verifier, "state-4", false)
		tok, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/logout", tok.AccessToken, map[string]any{}), http.StatusOK, "")
		if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token(); oauthErr(err) != "invalid_grant" {
			t.Fatalf("refresh after logout: %v", err)
		}

		// Another client cannot use this client's refresh token.
		q = authorize(t, br, conf, verifier, "state-5", false)
		tok, err = conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("exchange: %v", err)
		}
		other := s.Do(t, "POST", registerPath, "", map[string]any{"client_uri": "https://other.example.org/",
			"redirect_uris": []string{"https://other.example.org/cb"}, "grant_types": []string{"authorization_code", "refresh_token"}})
		hearthtest.Expect(t, other, http.StatusCreated, "")
		otherConf := clientConfig(md, other.JSON["client_id"].(string), "X")
		if _, err := otherConf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token(); oauthErr(err) != "invalid_grant" {
			t.Fatalf("refresh by another client: %v", err)
		}
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusOK, "")
	})
}

// formPost sends an application/x-www-form-urlencoded request, as OAuth
// clients do.
func formPost(t *testing.T, s *hearthtest.Server, path string, v url.Values) hearthtest.Response {
	t.Helper()
	resp, err := http.PostForm(s.URL+path, v)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := hearthtest.Response{Status: resp.StatusCode, Header: resp.Header, Body: body}
	_ = json.Unmarshal(body, &out.JSON)
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("POST %s: Cache-Control %q, want no-store", path, resp.Header.Get("Cache-Control"))
	}
	return out
}
