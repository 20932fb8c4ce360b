package federation_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestServerKeys(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/server/" + string(hs.Key.ID)} {
		r := hearthtest.Do(t, hs.Client, "GET", hs.FederationURL+path, "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		// The response is signed by the key it publishes.
		if err := gomatrixserverlib.VerifyJSON("hearth.test", hs.Key.ID, hs.Key.Public(), r.Body); err != nil {
			t.Fatalf("server keys signature: %v", err)
		}
		var parsed gomatrixserverlib.ServerKeys
		if err := parsed.UnmarshalJSON(r.Body); err != nil {
			t.Fatal(err)
		}
		if parsed.ServerName != "hearth.test" {
			t.Errorf("server_name = %q", parsed.ServerName)
		}
		if vk, ok := parsed.VerifyKeys[hs.Key.ID]; !ok || string(vk.Key) != string(hs.Key.Public()) {
			t.Errorf("verify_keys lacks our key: %s", r.Body)
		}
		if until := parsed.ValidUntilTS.Time(); until.Before(time.Now().Add(time.Hour)) {
			t.Errorf("valid_until_ts %v is too soon", until)
		}
	}
}

func TestFederationVersionAndUnknown(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	r := hearthtest.Do(t, hs.Client, "GET", hs.FederationURL+"/_matrix/federation/v1/version", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	if server, _ := r.JSON["server"].(map[string]any); server["name"] != "Hearth" || server["version"] == "" {
		t.Errorf("version: %s", r.Body)
	}
	hearthtest.Expect(t, hearthtest.Do(t, hs.Client, "GET", hs.FederationURL+"/_matrix/federation/v1/nope", "", nil), http.StatusNotFound, "M_UNRECOGNIZED")
}
