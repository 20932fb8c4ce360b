package oauth_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestOAuth2ClientLibrary uses golang.org/x/oauth2 as an application does
// for the whole life of a session: the device grant, then the library's
// own HTTP client on the Matrix API, which refreshes the expired access
// token by itself (rotation: the pair it replaced is dead once the new one
// is used), then revocation of the refresh token (RFC 7009), after which
// the library's client is signed out and cannot refresh.
func TestOAuth2ClientLibrary(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		_, pwToken := s.RegisterUser(t, "alice")
		md := metadata(t, s)
		clientID := nativeClient(t, s)
		conf := clientConfig(md, clientID, "LIBDEVICE1")
		da, err := conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		br := newBrowser(t, s.URL)
		p := br.get(da.VerificationURIComplete)
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		br.submit(p, "/_hearth/oauth2/link", nil, "action=allow")
		first, err := conf.DeviceAccessToken(ctx, da)
		if err != nil {
			t.Fatal(err)
		}

		// The library's client, holding a token it believes expired.
		expired := *first
		expired.Expiry = time.Now().Add(-time.Second)
		ts := conf.TokenSource(ctx, &expired)
		client := oauth2.NewClient(ctx, ts)
		whoamiVia := func() (int, map[string]any) {
			t.Helper()
			resp, err := client.Get(s.URL + "/_matrix/client/v3/account/whoami")
			if err != nil {
				return 0, map[string]any{"error": err.Error()}
			}
			defer resp.Body.Close()
			var body map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&body)
			return resp.StatusCode, body
		}
		if st, body := whoamiVia(); st != http.StatusOK || body["device_id"] != "LIBDEVICE1" {
			t.Fatalf("whoami through the library's client: %d %v", st, body)
		}
		current, err := ts.Token()
		if err != nil || current.AccessToken == first.AccessToken || current.RefreshToken == first.RefreshToken {
			t.Fatalf("the library did not refresh: %v %+v", err, current)
		}
		hearthtest.Expect(t, whoami(t, s, first.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		if st, _ := whoamiVia(); st != http.StatusOK {
			t.Fatalf("second call with the refreshed token: %d", st)
		}

		// Revoking the refresh token signs the device out: the access token dies with it.
		hearthtest.Expect(t, formPost(t, s, "/_hearth/oauth2/revoke", url.Values{"token": {current.RefreshToken},
			"token_type_hint": {"refresh_token"}, "client_id": {clientID}}), http.StatusOK, "")
		if st, body := whoamiVia(); st != http.StatusUnauthorized || body["errcode"] != "M_UNKNOWN_TOKEN" {
			t.Fatalf("the library's client after revocation: %d %v", st, body)
		}
		if _, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: current.RefreshToken, Expiry: time.Now().Add(-time.Minute)}).Token(); oauthErr(err) != "invalid_grant" {
			t.Fatalf("refresh after revocation: %v", err)
		}
		if r := s.Do(t, "GET", "/_matrix/client/v3/devices", pwToken, nil); r.Status != http.StatusOK || strings.Contains(string(r.Body), "LIBDEVICE1") {
			t.Fatalf("devices after revocation: %s", r.Body)
		}
		// An unsupported hint is refused (RFC 7009 section 2.2.1).
		r := formPost(t, s, "/_hearth/oauth2/revoke", url.Values{"token": {"x"}, "token_type_hint": {"id_token"}, "client_id": {clientID}})
		if r.Status != http.StatusBadRequest || r.JSON["error"] != "unsupported_token_type" {
			t.Fatalf("unsupported hint: %d %s", r.Status, r.Body)
		}
	})
}
