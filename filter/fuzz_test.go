package filter

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// The spec's example filter (client-server API, POST /user/{userId}/filter).
const specFilter = `{"room":{"state":{"types":["m.room.*"],"not_rooms":["!726s6s6q:example.com"]},` +
	`"timeline":{"limit":10,"types":["m.room.message"],"not_rooms":["!726s6s6q:example.com"],"not_senders":["@spam:example.com"]},` +
	`"ephemeral":{"types":["m.receipt","m.typing"],"not_rooms":["!726s6s6q:example.com"],"not_senders":["@spam:example.com"]}},` +
	`"presence":{"types":["m.presence"],"not_senders":["@alice:example.com"]},"event_format":"client","event_fields":["type","content","sender"]}`

// FuzzParse: a filter Parse accepts is stored compacted (POST /filter) and
// parsed again from storage by /sync, so the compacted form must parse to
// the same filter; the parsed filter validates again; and what it lets
// through agrees with a reference reading of the spec's rules (not_* win,
// absent lists allow all, empty lists allow nothing, a trailing * matches
// any rest of the type).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		specFilter,
		`{"room":{"timeline":{"limit":5,"lazy_load_members":true,"contains_url":false,"org.matrix.msc3874.rel_types":["m.thread"]},"include_leave":true}}`,
		`{"presence":{"types":[]},"account_data":{"not_types":["*"]},"room":{"rooms":[],"account_data":{"types":["m.tag"]}}}`,
		`{"event_format":"federation","room":{"state":{"senders":["@a:b"],"not_senders":["@a:b"]}}}`,
		`{"room":{"timeline":{"limit":-1}}}`, `{"room":{"rooms":["nope"]}}`, `{"event_format":"xml"}`, `[]`, `{`, `{}`, ``,
	} {
		f.Add([]byte(s), "m.room.message", "@spam:example.com", "!726s6s6q:example.com")
	}
	f.Fuzz(func(t *testing.T, body []byte, evType, sender, roomID string) {
		fl, err := Parse(body)
		if err != nil {
			return
		}
		if err := fl.Validate(); err != nil {
			t.Fatalf("parsed filter does not validate: %v", err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, bytes.TrimSpace(body)); err != nil {
			t.Fatalf("accepted %q, which does not compact: %v", body, err)
		}
		again, err := Parse(compact.Bytes())
		if err != nil || !reflect.DeepEqual(again, fl) {
			t.Fatalf("stored form %q parses to %#v, %v; uploaded %#v", compact.Bytes(), again, err, fl)
		}
		efs := []*EventFilter{fl.Presence, fl.AccountData}
		if r := fl.Room; r != nil {
			for _, ref := range []*RoomEventFilter{r.Ephemeral, r.State, r.Timeline, r.AccountData} {
				if ref != nil {
					efs = append(efs, &ref.EventFilter)
				} else {
					efs = append(efs, nil)
				}
				if got, want := ref.AllowsEvent(evType, sender, nil), refAllows(eventFilterOf(ref), evType, sender) && (ref == nil || ref.RelTypes == nil) && (ref == nil || ref.ContainsURL == nil || !*ref.ContainsURL); got != want {
					t.Fatalf("room event filter %#v on (%q, %q): got %v, reference %v", ref, evType, sender, got, want)
				}
			}
			if got, want := AllowsRoom(r.Rooms, r.NotRooms, roomID), !slices.Contains(r.NotRooms, roomID) && (r.Rooms == nil || slices.Contains(r.Rooms, roomID)); got != want {
				t.Fatalf("rooms %q not_rooms %q on %q: got %v, reference %v", r.Rooms, r.NotRooms, roomID, got, want)
			}
		}
		for _, ef := range efs {
			if got, want := ef.Allows(evType, sender), refAllows(ef, evType, sender); got != want {
				t.Fatalf("filter %#v on (%q, %q): got %v, reference %v", ef, evType, sender, got, want)
			}
		}
	})
}

func eventFilterOf(f *RoomEventFilter) *EventFilter {
	if f == nil {
		return nil
	}
	return &f.EventFilter
}

// refAllows is the filtering rule written out plainly.
func refAllows(f *EventFilter, evType, sender string) bool {
	if f == nil {
		return true
	}
	typeMatches := func(p string) bool {
		if strings.HasSuffix(p, "*") {
			return len(evType) >= len(p)-1 && evType[:len(p)-1] == p[:len(p)-1]
		}
		return p == evType
	}
	if slices.ContainsFunc(f.NotTypes, typeMatches) || f.Types != nil && !slices.ContainsFunc(f.Types, typeMatches) {
		return false
	}
	if slices.Contains(f.NotSenders, sender) || f.Senders != nil && !slices.Contains(f.Senders, sender) {
		return false
	}
	return true
}
