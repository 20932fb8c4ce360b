package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// sendEvent sends an event of any type and content and returns its ID.
func (u user) sendEvent(t *testing.T, roomID, evType string, content map[string]any) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/"+evType+"/"+nextTxn(), content)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

// putState sets a state event and fails the test unless it is accepted.
func (u user) putState(t *testing.T, roomID, evType, stateKey string, content map[string]any) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType+"/"+url.PathEscape(stateKey), content)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

// eventIDs lists the event_id of each object of a JSON array.
func eventIDs(v any) []string {
	arr, _ := v.([]any)
	out := []string{}
	for _, e := range arr {
		if m, ok := e.(map[string]any); ok {
			id, _ := m["event_id"].(string)
			out = append(out, id)
		}
	}
	return out
}

// path walks nested JSON objects by keys.
func path(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
