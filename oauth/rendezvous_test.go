package oauth_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestRendezvous drives the QR sign-in rendezvous (MSC4388): discovery,
// creation by a signed-in device, the ping-pong of reads and
// compare-and-swap writes between two devices, an idempotent retry, the
// size cap, navigation refusal and cancellation.
func TestRendezvous(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		_, token := s.RegisterUser(t, "alice")
		const base = "/_matrix/client/unstable/io.element.msc4388/rendezvous"

		if r := s.Do(t, "GET", "/_matrix/client/versions", "", nil); !strings.Contains(string(r.Body), `"io.element.msc4388":true`) {
			t.Fatalf("versions: %s", r.Body)
		}
		r := s.Do(t, "GET", base, "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["create_available"] != false {
			t.Fatalf("discovery without a token: %s", r.Body)
		}
		if r = s.Do(t, "GET", base, token, nil); r.JSON["create_available"] != true {
			t.Fatalf("discovery with a token: %s", r.Body)
		}
		hearthtest.Expect(t, s.Do(t, "POST", base, "", map[string]any{"data": "x"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, s.Do(t, "POST", base, token, map[string]any{"data": strings.Repeat("x", 4097)}), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		hearthtest.Expect(t, s.Do(t, "POST", base, token, map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")

		// Device A (signed in) creates the session; device B (not signed in) reads it.
		r = s.Do(t, "POST", base, token, map[string]any{"data": "hello from A"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		id, seqA := r.JSON["id"].(string), r.JSON["sequence_token"].(string)
		if id == "" || seqA == "" || r.JSON["expires_in_ms"].(float64) > 300000 || r.JSON["expires_in_ms"].(float64) < 120000 {
			t.Fatalf("create: %s", r.Body)
		}
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("rendezvous responses must not be cached: %v", r.Header)
		}
		path := base + "/" + id
		r = s.Do(t, "GET", path, "", nil)
		if r.Status != http.StatusOK || r.JSON["data"] != "hello from A" || r.JSON["sequence_token"] != seqA {
			t.Fatalf("B reads: %d %s", r.Status, r.Body)
		}
		// B answers on A's token.
		r = s.Do(t, "PUT", path, "", map[string]any{"sequence_token": seqA, "data": "hello from B"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		seqB := r.JSON["sequence_token"].(string)
		if seqB == seqA {
			t.Fatalf("sequence token unchanged by a write")
		}
		// Retrying the same write (lost response) succeeds with the current token.
		r = s.Do(t, "PUT", path, "", map[string]any{"sequence_token": seqA, "data": "hello from B"})
		if r.Status != http.StatusOK || r.JSON["sequence_token"] != seqB {
			t.Fatalf("idempotent retry: %d %s", r.Status, r.Body)
		}
		// A writing on the stale token with other data is a concurrent write.
		hearthtest.Expect(t, s.Do(t, "PUT", path, "", map[string]any{"sequence_token": seqA, "data": "late"}), http.StatusConflict, "IO_ELEMENT_MSC4388_CONCURRENT_WRITE")
		// The same data written again with the current token gets a new token.
		r = s.Do(t, "PUT", path, "", map[string]any{"sequence_token": seqB, "data": "hello from B"})
		if r.Status != http.StatusOK || r.JSON["sequence_token"] == seqB {
			t.Fatalf("rewrite of the same data: %d %s", r.Status, r.Body)
		}
		hearthtest.Expect(t, s.Do(t, "PUT", path, "", map[string]any{"data": "no token"}), http.StatusBadRequest, "M_BAD_JSON")

		// A browser navigating to the session is refused.
		req, _ := http.NewRequest("GET", s.URL+path, nil)
		req.Header.Set("Sec-Fetch-Mode", "navigate")
		req.Header.Set("Sec-Fetch-Dest", "document")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("navigation to a rendezvous: %d", resp.StatusCode)
		}

		// Cancel: everything after is 404.
		hearthtest.Expect(t, s.Do(t, "DELETE", path, "", nil), http.StatusOK, "")
		hearthtest.Expect(t, s.Do(t, "GET", path, "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, s.Do(t, "PUT", path, "", map[string]any{"sequence_token": seqB, "data": "x"}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, s.Do(t, "DELETE", path, "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, s.Do(t, "GET", base+"/unknown", "", nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}
