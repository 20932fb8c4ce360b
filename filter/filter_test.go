package filter

import "testing"

// An absent list means "no restriction" and an empty one "nothing": the
// Go form must keep them apart for sync.
func TestAbsentAndEmptyListsDiffer(t *testing.T) {
	f, err := Parse([]byte(`{"presence":{"types":[]},"room":{"timeline":{"limit":5,"rooms":["!a:x"]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Presence.Types == nil || len(f.Presence.Types) != 0 {
		t.Errorf("empty types list: %#v", f.Presence.Types)
	}
	if f.Presence.NotTypes != nil || f.AccountData != nil || f.Room.State != nil {
		t.Errorf("absent fields must stay nil: %#v", f)
	}
	if *f.Room.Timeline.Limit != 5 || f.Room.Timeline.Rooms[0] != "!a:x" {
		t.Errorf("timeline: %#v", f.Room.Timeline)
	}
}
