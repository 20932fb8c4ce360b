package clientapi_test

import (
	"net/http"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// The flows of the "Done when" list run in both dialects: tests
// write requests in the unstable dialect, and ssUser sends them as they
// are (unstable) or rewritten into MSC4186 v4 (pos and timeout in the
// body, range, {include, lazy_members}, is_invited), reading v4's
// stripped_state back as invite_state.

var ssDialects = []struct {
	name string
	v4   bool
}{{"unstable", false}, {"v4", true}}

// forEachDialect runs fn per backend and dialect.
func forEachDialect(t *testing.T, fn func(t *testing.T, b hearthtest.Backend, v4 bool)) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		for _, d := range ssDialects {
			t.Run(d.name, func(t *testing.T) { fn(t, b, d.v4) })
		}
	})
}

type ssUser struct {
	user
	v4 bool
}

func (u ssUser) ss(t *testing.T, pos string, timeoutMS int, body map[string]any) hearthtest.Response {
	t.Helper()
	r := u.ssRaw(t, pos, timeoutMS, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r
}

func (u ssUser) ssRaw(t *testing.T, pos string, timeoutMS int, body map[string]any) hearthtest.Response {
	t.Helper()
	if !u.v4 {
		return u.user.ssRaw(t, pos, timeoutMS, body)
	}
	b := toV4Body(t, body)
	if pos != "" {
		b["pos"] = pos
	}
	b["timeout"] = timeoutMS
	r := u.do(t, "POST", "/_matrix/client/v4/sync", b)
	for _, room := range ssRooms(r) {
		m := room.(map[string]any)
		if m["invite_state"] != nil {
			t.Fatalf("v4 response with invite_state: %s", r.Body)
		}
		if s, ok := m["stripped_state"]; ok {
			m["invite_state"] = s
		}
	}
	return r
}

func toV4Body(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range body {
		out[k] = v
	}
	if lists, ok := body["lists"].(map[string]any); ok {
		nl := map[string]any{}
		for name, l := range lists {
			nl[name] = toV4Config(t, l.(map[string]any), true)
		}
		out["lists"] = nl
	}
	if subs, ok := body["room_subscriptions"].(map[string]any); ok {
		ns := map[string]any{}
		for id, s := range subs {
			ns[id] = toV4Config(t, s.(map[string]any), false)
		}
		out["room_subscriptions"] = ns
	}
	return out
}

func toV4Config(t *testing.T, cfg map[string]any, list bool) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range cfg {
		switch k {
		case "ranges":
			rs := v.([][]int)
			if len(rs) != 1 {
				t.Fatalf("v4 lists have one range, not %v", rs)
			}
			out["range"] = rs[0]
		case "required_state":
			rs := map[string]any{}
			include := []any{}
			for _, pair := range v.([][]string) {
				if pair[0] == "m.room.member" && pair[1] == "$LAZY" {
					rs["lazy_members"] = true
					continue
				}
				el := map[string]any{}
				if pair[0] != "*" {
					el["type"] = pair[0]
				}
				if pair[1] != "*" {
					el["state_key"] = pair[1]
				}
				include = append(include, el)
			}
			rs["include"] = include
			out["required_state"] = rs
		case "filters":
			f := map[string]any{}
			for fk, fv := range v.(map[string]any) {
				if fk == "is_invite" {
					fk = "is_invited"
				}
				f[fk] = fv
			}
			out["filters"] = f
		default:
			out[k] = v
		}
	}
	return out
}
