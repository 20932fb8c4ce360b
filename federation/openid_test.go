package federation_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// An OpenID token from the client API proves its user's ID at the
// federation userinfo endpoint, and nothing else: not another user's, not
// as an access token, and not once it is unknown.
func TestOpenIDTokenExchange(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, aliceToken := hs.RegisterUser(t, "alice")
		bob, _ := hs.RegisterUser(t, "bob")

		path := "/_matrix/client/v3/user/" + url.PathEscape(alice) + "/openid/request_token"
		r := hs.Do(t, "POST", path, aliceToken, map[string]any{})
		hearthtest.Expect(t, r, 200, "")
		tok, _ := r.JSON["access_token"].(string)
		if tok == "" || r.JSON["token_type"] != "Bearer" || r.JSON["matrix_server_name"] != hs.Config.ServerName {
			t.Fatalf("request_token answered %v", r.JSON)
		}
		if exp, _ := r.JSON["expires_in"].(float64); exp <= 0 {
			t.Fatalf("expires_in = %v, want positive", r.JSON["expires_in"])
		}

		userinfo := hs.FederationURL + "/_matrix/federation/v1/openid/userinfo?access_token="
		r = hearthtest.Do(t, hs.Client, "GET", userinfo+url.QueryEscape(tok), "", nil)
		hearthtest.Expect(t, r, 200, "")
		if r.JSON["sub"] != alice {
			t.Fatalf("userinfo sub = %v, want %s", r.JSON["sub"], alice)
		}

		// Not an access token, and not for someone else.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", tok, nil), 401, "M_UNKNOWN_TOKEN")
		other := "/_matrix/client/v3/user/" + url.PathEscape(bob) + "/openid/request_token"
		hearthtest.Expect(t, hs.Do(t, "POST", other, aliceToken, map[string]any{}), 403, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "POST", path, "", map[string]any{}), 401, "M_MISSING_TOKEN")

		// Unknown, empty and missing tokens.
		hearthtest.Expect(t, hearthtest.Do(t, hs.Client, "GET", userinfo+"oid_forged", "", nil), 401, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, hearthtest.Do(t, hs.Client, "GET", userinfo, "", nil), 400, "M_MISSING_PARAM")

		// The token outlives a restart (it is committed), and a
		// deactivated user's tokens prove nothing.
		hs.Restart(t)
		hearthtest.Expect(t, hearthtest.Do(t, hs.Client, "GET", userinfo+url.QueryEscape(tok), "", nil), 200, "")
		r = hs.Do(t, "POST", "/_matrix/client/v3/account/deactivate", aliceToken, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": alice}, "password": "password"},
		})
		hearthtest.Expect(t, r, 200, "")
		hearthtest.Expect(t, hearthtest.Do(t, hs.Client, "GET", userinfo+url.QueryEscape(tok), "", nil), 401, "M_UNKNOWN_TOKEN")
	})
}

// The LiveKit authorization service's way of checking another server's
// OpenID token (rtc.RemoteOpenID): the token's server names its user, who
// must be on that server; errors never carry the token.
func TestOpenIDUserInfoClient(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		hs, remote := fed[0], fed[1]
		bob, bobToken := remote.RegisterUser(t, "bob")
		r := remote.Do(t, "POST", "/_matrix/client/v3/user/"+url.PathEscape(bob)+"/openid/request_token", bobToken, map[string]any{})
		hearthtest.Expect(t, r, 200, "")
		tok := r.JSON["access_token"].(string)
		ctx := t.Context()

		got, err := hs.Federation.OpenIDUserInfo(ctx, remote.Config.ServerName, tok)
		if err != nil || got != bob {
			t.Fatalf("OpenIDUserInfo = %q, %v; want %s", got, err, bob)
		}
		for _, c := range []struct{ server, token string }{
			{remote.Config.ServerName, "oid_forged_secret"}, // unknown there
			{hs.Config.ServerName, tok},                     // ours: looked up locally, not here
			{"evil.example/x?y=", tok},                      // not a server name
		} {
			if _, err := hs.Federation.OpenIDUserInfo(ctx, c.server, c.token); err == nil || strings.Contains(err.Error(), c.token) {
				t.Errorf("%s: error %v (want one without the token)", c.server, err)
			}
		}

		// A server answering a user of another server is not believed.
		remote.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasSuffix(r.URL.Path, "/openid/userinfo") {
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write([]byte(`{"sub":"@admin:` + hs.Config.ServerName + `"}`))
					return
				}
				fedH.ServeHTTP(w, r)
			})
		})
		if got, err := hs.Federation.OpenIDUserInfo(ctx, remote.Config.ServerName, tok); err == nil {
			t.Fatalf("a user of another server was accepted: %s", got)
		}
	})
}
