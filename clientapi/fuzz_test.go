package clientapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// tokenDepth is the nesting depth of valid JSON b, by the decoder.
func tokenDepth(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	depth, max := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return max
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			max = maxInt(max, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}

// FuzzReadContent: event content that readContent (PUT /send and /state)
// accepts is a JSON object of at most 64 KiB that passes the strict
// canonical JSON check of room versions 6 and up (checkCanonicalNumbers
// must be at least as strict as gomatrixserverlib's, or a client could
// make events other servers refuse), and an event built with it either
// fails to build (a 400) or parses back, as a remote server would read
// it, with the same content. It nests at most MaxJSONDepth deep: the
// canonical JSON of deeper events takes seconds.
func FuzzReadContent(f *testing.F) {
	for _, s := range []string{
		`{"msgtype":"m.text","body":"hello"}`, `{"body":"☃ \u2603 \ud83d\ude00","format":"org.matrix.custom.html","formatted_body":"<b>x</b>"}`,
		`{"n":9007199254740991,"m":-9007199254740991,"z":0,"list":[1,[2,{"x":null}]],"t":true}`, `{"membership":"join","displayname":"A"}`,
		`{"n":9007199254740992}`, `{"f":1.5}`, `{"e":1e3}`, `{"E":1E3}`, `{"big":1e400}`, `[]`, `"x"`, `{`, ``, `{} {}`,
		`{"a":"\u0000"}`,
	} {
		f.Add([]byte(s))
	}
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize))
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	f.Fuzz(func(t *testing.T, body []byte) {
		content, err := readContent(httptest.NewRequest("PUT", "/send", bytes.NewReader(body)))
		if err != nil {
			return
		}
		if len(content) == 0 || content[0] != '{' || !json.Valid(content) || len(body) > 65536 {
			t.Fatalf("accepted %q as content %q", body, content)
		}
		if d := tokenDepth(content); d > mxhttp.MaxJSONDepth || d != mxhttp.JSONDepth(content) {
			t.Fatalf("accepted content nested %d deep (JSONDepth says %d)", d, mxhttp.JSONDepth(content))
		}
		if _, err := gomatrixserverlib.EnforcedCanonicalJSON(content, gomatrixserverlib.RoomVersionV11); err != nil {
			t.Fatalf("accepted %q, which room version 11 refuses: %v", body, err)
		}
		proto := gomatrixserverlib.ProtoEvent{SenderID: "@alice:hearth.test", RoomID: "!r:hearth.test", Type: "m.room.message",
			Content: []byte(content), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 3}
		ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.UnixMilli(1), "hearth.test", "ed25519:a", key)
		if err != nil {
			return // sendMessage answers 400 M_BAD_JSON
		}
		back, err := ver.NewEventFromUntrustedJSON(ev.JSON())
		if err != nil {
			t.Fatalf("content %q makes event %s, which does not parse: %v", content, ev.JSON(), err)
		}
		var want, got any
		if json.Unmarshal(content, &want) != nil || json.Unmarshal(back.Content(), &got) != nil || !reflect.DeepEqual(want, got) {
			t.Fatalf("content %q comes back as %q", content, back.Content())
		}
	})
}
