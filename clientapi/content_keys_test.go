package clientapi_test

import (
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// A key with a quote, backslash or control character would come out of
// gomatrixserverlib's canonical JSON changed or unparsable (found by
// FuzzReadContent): every way content reaches an event refuses it with
// 400 M_BAD_JSON and stores nothing, while such characters in values stay
// fine.
func TestContentKeysCanonicalJSONCannotHold(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{})
		hearthtest.Expect(t, r, 200, "")
		room := url.PathEscape(r.JSON["room_id"].(string))
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/1", tok,
			`{"msgtype":"m.text","body":"x","\\\"0":0}`), 400, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/state/m.custom/", tok,
			`{"a\nb":1}`), 400, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{
			"initial_state": []any{map[string]any{"type": "m.custom", "state_key": "", "content": map[string]any{"k\\": 1}}}}), 400, "M_BAD_JSON")
		// In values they are fine, and come back as sent.
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/2", tok,
			`{"msgtype":"m.text","body":"printf(\"\\\"\")\n"}`), 200, "")
		r = hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=1", tok, nil)
		hearthtest.Expect(t, r, 200, "")
		ev := r.JSON["chunk"].([]any)[0].(map[string]any)
		if body := ev["content"].(map[string]any)["body"]; body != "printf(\"\\\"\")\n" {
			t.Fatalf("body came back as %q", body)
		}
	})
}
