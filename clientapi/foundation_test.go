package clientapi_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestVersions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		r := hs.Do(t, "GET", "/_matrix/client/versions", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		vs, ok := r.JSON["versions"].([]any)
		if !ok || len(vs) == 0 {
			t.Fatalf("versions missing: %s", r.Body)
		}
		for _, v := range vs {
			if s, _ := v.(string); !strings.HasPrefix(s, "v1.") {
				t.Errorf("version %v is not of the form v1.N", v)
			}
		}
		// Exactly the versions and features docs/spec-coverage.md finds
		// implemented: a new entry needs the audit updated first.
		if got := fmt.Sprint(vs); got != "[v1.1 v1.2 v1.3 v1.4 v1.5 v1.6 v1.7 v1.8 v1.9 v1.10 v1.11 v1.12 v1.13 v1.14 v1.15 v1.16 v1.17 v1.18 v1.19]" {
			t.Errorf("versions = %s", got)
		}
		features, ok := r.JSON["unstable_features"].(map[string]any)
		if !ok {
			t.Errorf("unstable_features is not an object: %s", r.Body)
		}
		if got := fmt.Sprint(features); got != "map[io.element.msc4388:true org.matrix.msc3391:true org.matrix.msc3814:true org.matrix.msc4140:true org.matrix.msc4306:true org.matrix.simplified_msc3575:true]" {
			t.Errorf("unstable_features = %s", got)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != "*" {
			t.Errorf("Access-Control-Allow-Origin = %q, want *", got)
		}
	})
}

func TestUnknownEndpointsAndMethods(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/no_such_thing", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
	hearthtest.Expect(t, hs.Do(t, "DELETE", "/_matrix/client/versions", "", nil), http.StatusMethodNotAllowed, "M_UNRECOGNIZED")
	// CORS preflight is answered on any path, known or not.
	r := hs.Do(t, "OPTIONS", "/_matrix/client/v3/login", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers"} {
		if r.Header.Get(h) == "" {
			t.Errorf("preflight lacks %s", h)
		}
	}
	if !strings.Contains(r.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("Access-Control-Allow-Headers must allow Authorization: %q", r.Header.Get("Access-Control-Allow-Headers"))
	}
}

func TestWellKnown(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	hearthtest.Expect(t, hs.Do(t, "GET", "/.well-known/matrix/client", "", nil), http.StatusNotFound, "M_NOT_FOUND")
	hearthtest.Expect(t, hs.Do(t, "GET", "/.well-known/matrix/server", "", nil), http.StatusNotFound, "M_NOT_FOUND")

	hs = hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.WellKnownClient = "https://matrix.example.org"
		c.WellKnownServer = "matrix.example.org:443"
	})
	r := hs.Do(t, "GET", "/.well-known/matrix/client", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	if hsInfo, _ := r.JSON["m.homeserver"].(map[string]any); hsInfo["base_url"] != "https://matrix.example.org" {
		t.Errorf("client well-known: %s", r.Body)
	}
	r = hs.Do(t, "GET", "/.well-known/matrix/server", "", nil)
	if r.JSON["m.server"] != "matrix.example.org:443" {
		t.Errorf("server well-known: %s", r.Body)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		r := hs.Do(t, "GET", "/health", "", nil)
		if r.Status != http.StatusOK || string(r.Body) != "OK" {
			t.Fatalf("health: %d %s", r.Status, r.Body)
		}
		hs.Do(t, "GET", "/_matrix/client/versions", "", nil)
		// Metrics are not public: the client listener does not serve them.
		hearthtest.Expect(t, hs.Do(t, "GET", "/metrics", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
		metrics := httptest.NewServer(hs.MetricsHandler())
		defer metrics.Close()
		r = hearthtest.Do(t, http.DefaultClient, "GET", metrics.URL+"/metrics", "", nil)
		if !strings.Contains(string(r.Body), `hearth_http_requests_total{code="200",method="GET",route="/_matrix/client/versions"}`) {
			t.Errorf("metrics lack the versions request counter:\n%.2000s", r.Body)
		}
	})
}

// adminMAC computes Synapse's shared-secret registration MAC independently
// of the server's code.
func adminMAC(secret, nonce, user, password string, admin bool) string {
	m := hmac.New(sha1.New, []byte(secret))
	kind := "notadmin"
	if admin {
		kind = "admin"
	}
	m.Write([]byte(nonce + "\x00" + user + "\x00" + password + "\x00" + kind))
	return hex.EncodeToString(m.Sum(nil))
}

func TestSynapseAdminRegister(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.RegistrationSharedSecret = "s3cret" })
		nonce := func() string {
			r := hs.Do(t, "GET", "/_synapse/admin/v1/register", "", nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			n, _ := r.JSON["nonce"].(string)
			if n == "" {
				t.Fatalf("no nonce: %s", r.Body)
			}
			return n
		}
		n := nonce()
		r := hs.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": n, "username": "Alice", "password": "pw", "admin": true,
			"mac": adminMAC("s3cret", n, "Alice", "pw", true),
		})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@alice:hearth.test" || r.JSON["access_token"] == "" || r.JSON["device_id"] == "" || r.JSON["home_server"] != "hearth.test" {
			t.Fatalf("register response: %s", r.Body)
		}
		// A nonce is single-use.
		r = hs.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": n, "username": "bob", "password": "pw", "mac": adminMAC("s3cret", n, "bob", "pw", false),
		})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_UNKNOWN")
		// A wrong secret is refused and creates nothing.
		n = nonce()
		r = hs.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": n, "username": "bob", "password": "pw", "mac": adminMAC("wrong", n, "bob", "pw", false),
		})
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
		if exists, err := hs.DB.UserExists(t.Context(), "bob"); err != nil || exists {
			t.Fatalf("bob exists after a refused registration: %v %v", exists, err)
		}
		// The same name twice: M_USER_IN_USE.
		n = nonce()
		r = hs.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": n, "username": "alice", "password": "pw", "mac": adminMAC("s3cret", n, "alice", "pw", false),
		})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_USER_IN_USE")
		// Invalid user names: M_INVALID_USERNAME.
		n = nonce()
		r = hs.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": n, "username": "bad name", "password": "pw", "mac": adminMAC("s3cret", n, "bad name", "pw", false),
		})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_INVALID_USERNAME")
		user, err := hs.DB.GetUser(t.Context(), "@alice:hearth.test")
		if err != nil || !user.IsAdmin || !strings.HasPrefix(user.PasswordHash, "$2") {
			t.Fatalf("stored user: %+v %v", user, err)
		}
	})
}

func TestAdminRegisterDisabledWithoutSecret(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	hearthtest.Expect(t, hs.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
}

func TestBadRequestBodies(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.RegistrationSharedSecret = "s3cret"
		c.MaxRequestBytes = 1 << 16
	})
	const path = "/_synapse/admin/v1/register"
	hearthtest.Expect(t, hs.Do(t, "POST", path, "", "{not json"), http.StatusBadRequest, "M_NOT_JSON")
	hearthtest.Expect(t, hs.Do(t, "POST", path, "", ""), http.StatusBadRequest, "M_NOT_JSON")
	hearthtest.Expect(t, hs.Do(t, "POST", path, "", `["an array"]`), http.StatusBadRequest, "M_BAD_JSON")
	hearthtest.Expect(t, hs.Do(t, "POST", path, "", `{"username": 12}`), http.StatusBadRequest, "M_BAD_JSON")
	big := `{"username":"` + strings.Repeat("a", 1<<17) + `"}`
	hearthtest.Expect(t, hs.Do(t, "POST", path, "", big), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	// The server is still healthy afterwards.
	hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/versions", "", nil), http.StatusOK, "")
}
