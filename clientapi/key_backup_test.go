package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestKeyBackup(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		const alg = "m.megolm_backup.v1.curve25519-aes-sha2"
		const v3 = "/_matrix/client/v3/room_keys"

		hearthtest.Expect(t, alice.do(t, "GET", v3+"/version", nil), http.StatusNotFound, "M_NOT_FOUND")
		r := alice.do(t, "POST", v3+"/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "abc"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		first, _ := r.JSON["version"].(string)
		r = alice.do(t, "POST", v3+"/version", map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "def"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		version, _ := r.JSON["version"].(string)
		if first == "" || version == first {
			t.Fatalf("versions %q %q", first, version)
		}
		r = alice.do(t, "GET", v3+"/version", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["version"] != version || r.JSON["algorithm"] != alg || jsonPath(r.JSON, "auth_data", "public_key") != "def" || r.JSON["count"] != float64(0) {
			t.Fatalf("latest: %s", r.Body)
		}
		// Update auth_data; the algorithm and version must match.
		hearthtest.Expect(t, alice.do(t, "PUT", v3+"/version/"+version, map[string]any{"algorithm": alg, "auth_data": map[string]any{"public_key": "ghi"}, "version": version}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", v3+"/version/"+version, map[string]any{"algorithm": "other", "auth_data": map[string]any{}}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "PUT", v3+"/version/"+version, map[string]any{"algorithm": alg, "auth_data": map[string]any{}, "version": first}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "PUT", v3+"/version/999", map[string]any{"algorithm": alg, "auth_data": map[string]any{}}), http.StatusNotFound, "M_NOT_FOUND")

		key := func(verified bool, index, forwarded int, tag string) map[string]any {
			return map[string]any{"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified, "session_data": map[string]any{"tag": tag}}
		}
		put := func(k map[string]any) hearthtest.Response {
			return alice.do(t, "PUT", v3+"/keys/!room:hearth.test/sess?version="+version, k)
		}
		tag := func() any {
			r := alice.do(t, "GET", v3+"/keys/!room:hearth.test/sess?version="+version, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return jsonPath(r.JSON, "session_data", "tag")
		}
		r = put(key(false, 5, 5, "a"))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["count"] != float64(1) || r.JSON["etag"] == nil {
			t.Fatalf("put: %s", r.Body)
		}
		etag := r.JSON["etag"]
		// Replacement rules: verified wins, then the lower first_message_index,
		// then the lower forwarded_count; a worse key is ignored.
		for _, step := range []struct {
			k    map[string]any
			want string
		}{
			{key(false, 6, 0, "worse index"), "a"},
			{key(false, 5, 6, "worse forwarded"), "a"},
			{key(false, 5, 4, "better forwarded"), "better forwarded"},
			{key(false, 1, 9, "better index"), "better index"},
			{key(true, 9, 9, "verified"), "verified"},
			{key(false, 0, 0, "unverified"), "verified"},
			{key(true, 0, 9, "verified better index"), "verified better index"},
		} {
			hearthtest.Expect(t, put(step.k), http.StatusOK, "")
			if got := tag(); got != step.want {
				t.Fatalf("after %v: kept %v, want %s", step.k["session_data"], got, step.want)
			}
		}
		r = put(key(false, 50, 50, "ignored"))
		if r.JSON["etag"] == etag || r.JSON["count"] != float64(1) {
			t.Fatalf("etag should have moved from %v and count stay 1: %s", etag, r.Body)
		}
		etag = r.JSON["etag"]
		if r = put(key(false, 50, 50, "ignored")); r.JSON["etag"] != etag {
			t.Fatalf("an ignored key changed the etag: %s", r.Body)
		}

		// Bulk and per-room uploads, reads at each level.
		hearthtest.Expect(t, alice.do(t, "PUT", v3+"/keys?version="+version, map[string]any{"rooms": map[string]any{
			"!other:hearth.test": map[string]any{"sessions": map[string]any{"s1": key(false, 0, 0, "s1"), "s2": key(false, 0, 0, "s2")}}}}), http.StatusOK, "")
		r = alice.do(t, "PUT", v3+"/keys/!third:hearth.test?version="+version, map[string]any{"sessions": map[string]any{"s3": key(false, 0, 0, "s3")}})
		if r.JSON["count"] != float64(4) {
			t.Fatalf("count: %s", r.Body)
		}
		r = alice.do(t, "GET", v3+"/keys?version="+version, nil)
		if len(r.JSON["rooms"].(map[string]any)) != 3 || jsonPath(r.JSON, "rooms", "!other:hearth.test", "sessions", "s2", "session_data", "tag") != "s2" {
			t.Fatalf("all keys: %s", r.Body)
		}
		r = alice.do(t, "GET", v3+"/keys/!nothing:hearth.test?version="+version, nil)
		if s, ok := r.JSON["sessions"].(map[string]any); !ok || len(s) != 0 {
			t.Fatalf("empty room: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "GET", v3+"/keys/!nothing:hearth.test/x?version="+version, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "GET", v3+"/keys?version=999", nil), http.StatusNotFound, "M_NOT_FOUND")

		// Only the current version takes keys.
		r = alice.do(t, "PUT", v3+"/keys/!room:hearth.test/sess?version="+first, key(true, 0, 0, "old"))
		hearthtest.Expect(t, r, http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if r.JSON["current_version"] != version {
			t.Fatalf("current_version: %s", r.Body)
		}
		// Missing fields are refused.
		hearthtest.Expect(t, put(map[string]any{"session_data": map[string]any{}}), http.StatusBadRequest, "M_BAD_JSON")

		// Deleting keys at each level.
		r = alice.do(t, "DELETE", v3+"/keys/!other:hearth.test/s1?version="+version, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["count"] != float64(3) {
			t.Fatalf("delete one: %s", r.Body)
		}
		r = alice.do(t, "DELETE", v3+"/keys/!other:hearth.test?version="+version, nil)
		if r.JSON["count"] != float64(2) {
			t.Fatalf("delete room: %s", r.Body)
		}
		r = alice.do(t, "DELETE", v3+"/keys?version="+version, nil)
		if r.JSON["count"] != float64(0) {
			t.Fatalf("delete all: %s", r.Body)
		}

		// Deleting the current version makes the previous one current;
		// deleting again succeeds; an unknown version is 404.
		hearthtest.Expect(t, alice.do(t, "DELETE", v3+"/version/"+version, nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "DELETE", v3+"/version/"+version, nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "DELETE", v3+"/version/999", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "GET", v3+"/version/"+version, nil), http.StatusNotFound, "M_NOT_FOUND")
		r = alice.do(t, "GET", v3+"/version", nil)
		if r.JSON["version"] != first {
			t.Fatalf("after delete: %s", r.Body)
		}
		// Another user cannot see alice's backups.
		bob := newUser(t, hs, "bob")
		hearthtest.Expect(t, bob.do(t, "GET", v3+"/version/"+first, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}
