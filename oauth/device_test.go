package oauth_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// TestDeviceAuthorizationGrant drives golang.org/x/oauth2's device flow
// (RFC 8628, spec v1.18) while a browser signs in and approves the user
// code, and checks the polling errors.
func TestDeviceAuthorizationGrant(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		s.RegisterUser(t, "alice")
		md := metadata(t, s)
		clientID := nativeClient(t, s)
		conf := clientConfig(md, clientID, "TVDEVICE01")
		da, err := conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatalf("device authorization: %v", err)
		}
		if !regexp.MustCompile(`^[B-DF-HJ-NP-TV-XZ]{4}-[B-DF-HJ-NP-TV-XZ]{4}$`).MatchString(da.UserCode) ||
			!strings.HasPrefix(da.VerificationURIComplete, da.VerificationURI+"?code=") || da.Interval != 5 {
			t.Fatalf("device authorization response: %+v", da)
		}
		poll := func(deviceCode, client string) hearthtest.Response {
			return formPost(t, s, "/_hearth/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
				"device_code": {deviceCode}, "client_id": {client}})
		}
		expectErr := func(r hearthtest.Response, want string) {
			t.Helper()
			if r.Status != http.StatusBadRequest || r.JSON["error"] != want {
				t.Fatalf("poll: %d %s, want %s", r.Status, r.Body, want)
			}
		}
		expectErr(poll(da.DeviceCode, clientID), "authorization_pending")
		expectErr(poll(da.DeviceCode, clientID), "slow_down")
		expectErr(poll("unknown", clientID), "invalid_grant")

		// The user opens verification_uri_complete, signs in and approves.
		br := newBrowser(t, s.URL)
		p := br.get(da.VerificationURIComplete)
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		if p.url.Path != "/_hearth/oauth2/link" || !strings.Contains(p.body, da.UserCode) || !strings.Contains(p.body, "TVDEVICE01") {
			t.Fatalf("approval page: %s %d %s", p.url, p.status, p.body)
		}
		checkPageHeaders(t, p)
		p = br.submit(p, "/_hearth/oauth2/link", nil, "action=allow")
		if p.status != http.StatusOK || !strings.Contains(p.body, "완료되었습니다") {
			t.Fatalf("approving: %d %s", p.status, p.body)
		}
		tok, err := conf.DeviceAccessToken(ctx, da)
		if err != nil {
			t.Fatalf("device access token: %v", err)
		}
		if r := whoami(t, s, tok.AccessToken); r.JSON["user_id"] != "@alice:hearth.test" || r.JSON["device_id"] != "TVDEVICE01" {
			t.Fatalf("whoami: %s", r.Body)
		}
		if tok.RefreshToken == "" {
			t.Fatalf("no refresh token from the device grant")
		}
		// Tokens are issued once.
		expectErr(poll(da.DeviceCode, clientID), "invalid_grant")

		// The user types the code (any case, no dash) on verification_uri, and denies.
		da2, err := clientConfig(md, clientID, "TVDEVICE02").DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p = br.get(da2.VerificationURI)
		q := br.submit(p, "/_hearth/oauth2/link", map[string]string{"code": "BCDF-GHJK-wrong"}, "")
		if q.status != http.StatusBadRequest {
			t.Fatalf("wrong code: %d", q.status)
		}
		typed := strings.ToLower(strings.ReplaceAll(da2.UserCode, "-", " "))
		p = br.submit(p, "/_hearth/oauth2/link", map[string]string{"code": typed}, "")
		p = br.submit(p, "/_hearth/oauth2/link", nil, "action=deny")
		if p.status != http.StatusOK {
			t.Fatalf("denying: %d %s", p.status, p.body)
		}
		expectErr(poll(da2.DeviceCode, clientID), "access_denied")

		// An expired device code.
		now := time.Now()
		if err := s.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.InsertDeviceGrant(ctx, tx, "expired-code", storage.OAuthDeviceGrant{UserCode: "BBBB-BBBB", ClientID: clientID,
				Scope: scopeAPI + " " + scopeDevice + "X", DeviceID: "X", CreatedTS: now.Add(-20 * time.Minute).UnixMilli(), ExpiresTS: now.Add(-time.Minute).UnixMilli()})
		}); err != nil {
			t.Fatal(err)
		}
		expectErr(poll("expired-code", clientID), "expired_token")

		// A client that did not register the grant may not start it.
		web := s.Do(t, "POST", registerPath, "", map[string]any{"client_uri": "https://w.example.org/", "redirect_uris": []string{"https://w.example.org/cb"}})
		r := formPost(t, s, "/_hearth/oauth2/device", url.Values{"client_id": {web.JSON["client_id"].(string)}, "scope": {scopeAPI + " " + scopeDevice + "Z"}})
		if r.Status != http.StatusBadRequest || r.JSON["error"] != "unauthorized_client" {
			t.Fatalf("device grant of a web client: %d %s", r.Status, r.Body)
		}
	})
}

// TestAccountManagement: the account page lists the devices of both
// sign-in styles, renames and signs out, and approves a cross-signing
// reset for the m.oauth UIA stage of an OAuth device.
func TestAccountManagement(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		_, pwToken := s.RegisterUser(t, "alice")
		pwDevice := whoami(t, s, pwToken).JSON["device_id"].(string)
		md := metadata(t, s)
		conf := clientConfig(md, nativeClient(t, s), "PHONE00001")
		verifier := oauth2.GenerateVerifier()
		br := newBrowser(t, s.URL)
		q := authorize(t, br, conf, verifier, "st", true)
		tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		account := md["account_management_uri"].(string)

		p := br.get(account + "?action=org.matrix.devices_list")
		checkPageHeaders(t, p)
		if p.status != http.StatusOK || !strings.Contains(p.body, pwDevice) || !strings.Contains(p.body, "PHONE00001") || !strings.Contains(p.body, "테스트 앱") {
			t.Fatalf("device list: %d %s", p.status, p.body)
		}
		// Rename the password device.
		p = br.submitWhere(p, "/_hearth/account/device", "device_id", pwDevice, map[string]string{"name": "Laptop"}, "op=rename")
		if p.status != http.StatusOK || !strings.Contains(p.body, `value="Laptop"`) {
			t.Fatalf("rename: %d %s", p.status, p.body)
		}
		if r := s.Do(t, "GET", "/_matrix/client/v3/devices/"+pwDevice, tok.AccessToken, nil); r.JSON["display_name"] != "Laptop" {
			t.Fatalf("renamed device: %s", r.Body)
		}

		// m.oauth: replacing cross-signing keys from the OAuth device needs
		// the user's approval on the account page.
		const path = "/_matrix/client/v3/keys/device_signing/upload"
		master := func() map[string]any {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			k := base64.RawStdEncoding.EncodeToString(pub)
			return map[string]any{"master_key": map[string]any{"user_id": "@alice:hearth.test", "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + k: k}}}
		}
		hearthtest.Expect(t, s.Do(t, "POST", path, tok.AccessToken, master()), http.StatusOK, "")
		replace := master()
		r := s.Do(t, "POST", path, tok.AccessToken, replace)
		params, _ := r.JSON["params"].(map[string]any)
		mOAuth, _ := params["m.oauth"].(map[string]any)
		resetURL, _ := mOAuth["url"].(string)
		if r.Status != http.StatusUnauthorized || !strings.Contains(string(r.Body), `"m.oauth"`) || !strings.HasPrefix(resetURL, account+"?action=org.matrix.cross_signing_reset") {
			t.Fatalf("replacement without approval: %d %s", r.Status, r.Body)
		}
		replace["auth"] = map[string]any{"session": r.JSON["session"]}
		hearthtest.Expect(t, s.Do(t, "POST", path, tok.AccessToken, replace), http.StatusUnauthorized, "M_FORBIDDEN")
		p = br.get(resetURL)
		p = br.submit(p, "/_hearth/account/cross-signing-reset", nil, "")
		if p.status != http.StatusOK {
			t.Fatalf("approving the reset: %d %s", p.status, p.body)
		}
		hearthtest.Expect(t, s.Do(t, "POST", path, tok.AccessToken, replace), http.StatusOK, "")
		// The approval is used up.
		again := master()
		hearthtest.Expect(t, s.Do(t, "POST", path, tok.AccessToken, again), http.StatusUnauthorized, "")
		// A password device still gets the password flow.
		if r := s.Do(t, "POST", path, pwToken, again); !strings.Contains(string(r.Body), "m.login.password") {
			t.Fatalf("password device's flows: %s", r.Body)
		}

		// Sign the password device out from the page (device_delete action).
		p = br.get(account + "?action=org.matrix.device_delete&device_id=" + pwDevice)
		if !strings.Contains(p.body, "이 기기에서 로그아웃") {
			t.Fatalf("device_delete page: %s", p.body)
		}
		p = br.submitWhere(p, "/_hearth/account/device", "device_id", pwDevice, nil, "op=delete")
		if p.status != http.StatusOK || strings.Contains(p.body, pwDevice) {
			t.Fatalf("after signing out: %d %s", p.status, p.body)
		}
		hearthtest.Expect(t, whoami(t, s, pwToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, whoami(t, s, tok.AccessToken), http.StatusOK, "")

		// Signing out of the page ends the browser session.
		p = br.submit(p, "/_hearth/account/logout", nil, "")
		if p.url.Path != loginAction {
			t.Fatalf("after page sign-out: %s", p.url)
		}
		if p = br.get(account); p.url.Path != loginAction {
			t.Fatalf("account page after sign-out: %s", p.url)
		}
	})
}

// TestBruteForceLimits: password attempts on the sign-in page and typed
// user codes are limited per address.
func TestBruteForceLimits(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.RateLimits = "on"
			c.RateLimitLoginPerSecond, c.RateLimitLoginBurst = 0.01, 3
		})
		s.RegisterUser(t, "alice")
		br := newBrowser(t, s.URL)
		p := br.get(s.URL + "/_hearth/oauth2/login")
		statuses := []int{}
		for range 4 {
			q := br.submit(p, loginAction, map[string]string{"username": "alice", "password": "guess"}, "")
			statuses = append(statuses, q.status)
		}
		if fmt.Sprint(statuses) != "[403 403 403 429]" {
			t.Fatalf("password attempts: %v", statuses)
		}
		// The right password is refused too while limited.
		if q := br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, ""); q.status != http.StatusTooManyRequests {
			t.Fatalf("right password while limited: %d", q.status)
		}

		// User codes have their own limit per address: a signed-in browser
		// guessing codes.
		s2 := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.RateLimits = "on"
			c.RateLimitLoginPerSecond, c.RateLimitLoginBurst = 0.01, 4
		})
		s2.RegisterUser(t, "bob")
		br2 := newBrowser(t, s2.URL)
		p = br2.get(s2.URL + "/_hearth/oauth2/link")
		p = br2.submit(p, loginAction, map[string]string{"username": "bob", "password": "password"}, "") // one password attempt
		statuses = statuses[:0]
		for range 4 {
			q := br2.submit(p, "/_hearth/oauth2/link", map[string]string{"code": "BCDF-GHJK"}, "")
			statuses = append(statuses, q.status)
		}
		if fmt.Sprint(statuses) != "[400 400 400 400]" {
			t.Fatalf("user code guesses: %v", statuses)
		}
		if q := br2.submit(p, "/_hearth/oauth2/link", map[string]string{"code": "BCDF-GHJK"}, ""); q.status != http.StatusTooManyRequests {
			t.Fatalf("user code guess over the limit: %d", q.status)
		}
	})
}
