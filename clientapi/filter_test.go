package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestFilters(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, aliceTok := hs.RegisterUser(t, "alice")
		bob, bobTok := hs.RegisterUser(t, "bob")
		path := func(user string) string { return "/_matrix/client/v3/user/" + url.PathEscape(user) + "/filter" }

		filter := map[string]any{
			"room": map[string]any{
				"state":    map[string]any{"types": []string{"m.room.*"}, "not_rooms": []string{"!726s6s6q:example.com"}},
				"timeline": map[string]any{"limit": 10, "types": []string{"m.room.message"}, "lazy_load_members": true},
			},
			"presence":     map[string]any{"types": []string{}},
			"event_format": "client",
			"event_fields": []string{"type", "content", "sender"},
		}
		r := hs.Do(t, "POST", path(alice), aliceTok, filter)
		hearthtest.Expect(t, r, http.StatusOK, "")
		id, _ := r.JSON["filter_id"].(string)
		if id == "" || id[0] == '{' {
			t.Fatalf("filter_id: %s", r.Body)
		}
		r = hs.Do(t, "GET", path(alice)+"/"+id, aliceTok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		// Both sides through map[string]any, so key order does not matter.
		var want map[string]any
		if err := json.Unmarshal(mustMarshal(t, filter), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r.JSON, want) {
			t.Fatalf("downloaded filter differs:\n got %s\nwant %v", r.Body, want)
		}

		// Filters are private to their user, and IDs are per user.
		hearthtest.Expect(t, hs.Do(t, "GET", path(alice)+"/"+id, bobTok, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "POST", path(alice), bobTok, filter), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "GET", path(bob)+"/"+id, bobTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", path(alice)+"/999999", aliceTok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", path(alice)+"/nonsense", aliceTok, nil), http.StatusNotFound, "M_NOT_FOUND")

		// An empty filter is valid.
		hearthtest.Expect(t, hs.Do(t, "POST", path(alice), aliceTok, map[string]any{}), http.StatusOK, "")

		bad := map[string]string{
			"limit as string":      `{"room":{"timeline":{"limit":"10"}}}`,
			"limit negative":       `{"room":{"timeline":{"limit":-1}}}`,
			"fractional limit":     `{"presence":{"limit":1.5}}`,
			"types not a list":     `{"room":{"state":{"types":"m.room.*"}}}`,
			"type not a string":    `{"account_data":{"types":[1]}}`,
			"room not a room ID":   `{"room":{"rooms":["#alias:example.com"]}}`,
			"sender not a user":    `{"presence":{"senders":["alice"]}}`,
			"unknown format":       `{"event_format":"xml"}`,
			"room not an object":   `{"room":[]}`,
			"include_leave type":   `{"room":{"include_leave":"yes"}}`,
			"event_fields type":    `{"event_fields":"type"}`,
			"contains_url type":    `{"room":{"timeline":{"contains_url":1}}}`,
			"not an object at all": `[1]`,
		}
		for name, body := range bad {
			r := hs.Do(t, "POST", path(alice), aliceTok, body)
			if r.Status != http.StatusBadRequest || r.ErrCode() != "M_BAD_JSON" {
				t.Errorf("%s: got %d %s, want 400 M_BAD_JSON", name, r.Status, r.Body)
			}
		}
		hearthtest.Expect(t, hs.Do(t, "POST", path(alice), aliceTok, `{oops`), http.StatusBadRequest, "M_NOT_JSON")
	})
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
