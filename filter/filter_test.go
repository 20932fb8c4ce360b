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

// AllowsType lets sync skip reading what a filter drops whatever its
// sender; it must never say no to a type some event could pass with.
func TestAllowsType(t *testing.T) {
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{`{}`, true},
		{`{"presence":{"not_types":["*"]}}`, false},
		{`{"presence":{"not_types":["m.*"]}}`, false},
		{`{"presence":{"not_types":["m.typing"]}}`, true},
		{`{"presence":{"types":[]}}`, false},
		{`{"presence":{"types":["m.pres*"]}}`, true},
		{`{"presence":{"types":["m.typing"]}}`, false},
		{`{"presence":{"senders":[]}}`, false},
		{`{"presence":{"senders":["@a:x"]}}`, true},
		{`{"presence":{"not_senders":["@a:x"]}}`, true},
	} {
		f, err := Parse([]byte(c.filter))
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Presence.AllowsType("m.presence"); got != c.want {
			t.Errorf("%s: AllowsType(m.presence) = %v, want %v", c.filter, got, c.want)
		}
	}
	var ef *RoomEventFilter
	if !ef.AllowsType("m.receipt") {
		t.Error("a nil room event filter must allow every type")
	}
}
