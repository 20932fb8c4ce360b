package pushrules

import (
	"encoding/json"
	"testing"
)

// Stored user rules must survive the JSON round trip exactly, including
// the distinctions evaluation depends on: a null value versus none, an
// empty pattern versus none, no conditions versus an empty list.
func TestUserRulesRoundTrip(t *testing.T) {
	var u UserRules
	conds := []Condition{
		{Kind: "event_property_is", Key: "content.x", Value: json.RawMessage("null")},
		{Kind: "event_match", Key: "state_key", Pattern: new(string)},
		{Kind: "org.example.unknown"},
	}
	if err := u.Put(Override, "r1", NewRule{Actions: &[]Action{Notify, SetTweak("highlight", false)}, Conditions: &conds}, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := u.Put(Underride, "r2", NewRule{Actions: &[]Action{}}, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := u.SetEnabled(Override, MasterRuleID, true); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(u)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseUserRules(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := json.Marshal(back)
	if string(again) != string(b) {
		t.Fatalf("round trip changed the rules:\n%s\n%s", b, again)
	}
	rs := back.Render("@a:x")
	r1, _ := rs.Find(Override, "r1")
	if string(r1.Conditions[0].Value) != "null" || r1.Conditions[1].Pattern == nil || *r1.Conditions[1].Pattern != "" {
		t.Errorf("conditions after round trip: %+v", r1.Conditions)
	}
	r2, _ := rs.Find(Underride, "r2")
	if r2.Conditions == nil {
		t.Error("an underride rule without conditions must render conditions: []")
	}
	if m, _ := rs.Find(Override, MasterRuleID); !m.Enabled || !m.Default {
		t.Errorf("master after enabling: %+v", m)
	}
	if got, _ := json.Marshal(r1.Actions); string(got) != `["notify",{"set_tweak":"highlight","value":false}]` {
		t.Errorf("actions: %s", got)
	}
}

// Defaults hands out copies: filling in one user's ID or editing a
// rendered rule must not leak into another user's rules.
func TestDefaultsAreCopies(t *testing.T) {
	a := Defaults(Override, "@a:x")
	a[2].Conditions[2].Pattern = new(string)
	a[0].Actions = append(a[0].Actions, Notify)
	b := Defaults(Override, "@b:x")
	if *b[2].Conditions[2].Pattern != "@b:x" || len(b[0].Actions) != 0 {
		t.Fatalf("defaults were modified through a copy: %+v", b[:3])
	}
}

func TestCopyRoomRules(t *testing.T) {
	oldRoom, newRoom := "!old:hs", "!new:hs"
	p := oldRoom
	u := UserRules{Custom: map[Kind][]Rule{
		Room:     {{RuleID: oldRoom, Enabled: true, Actions: []Action{{Name: "dont_notify"}}}, {RuleID: "!other:hs"}},
		Override: {{RuleID: "mute-" + oldRoom, Enabled: true, Conditions: []Condition{{Kind: "event_match", Key: "room_id", Pattern: &p}}}},
	}}
	if !u.CopyRoomRules(oldRoom, newRoom) {
		t.Fatal("nothing copied")
	}
	if r := u.Custom[Room]; len(r) != 3 || r[0].RuleID != newRoom || r[0].Actions[0].Name != "dont_notify" || !r[0].Enabled {
		t.Fatalf("room rules: %+v", r)
	}
	o := u.Custom[Override]
	if len(o) != 2 || o[0].RuleID != "mute-"+newRoom || *o[0].Conditions[0].Pattern != newRoom || *o[1].Conditions[0].Pattern != oldRoom {
		t.Fatalf("override rules: %+v", o)
	}
	if u.CopyRoomRules(oldRoom, newRoom) {
		t.Fatal("copied twice")
	}
}

// FromRendered undoes Render: a rule set kept whole (as Dendrite keeps
// it) becomes the same user changes, so rendering it again gives it back.
func TestFromRendered(t *testing.T) {
	var u UserRules
	pattern := "cats"
	if err := u.Put(Content, "cats", NewRule{Actions: &[]Action{Notify}, Pattern: &pattern}, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := u.Put(Room, "!r:x", NewRule{Actions: &[]Action{}}, "", ""); err != nil {
		t.Fatal(err)
	}
	if err := u.SetEnabled(Override, ".m.rule.suppress_notices", false); err != nil {
		t.Fatal(err)
	}
	rendered := u.Render("@a:x")
	b, _ := json.Marshal(rendered)
	var decoded Ruleset
	if err := json.Unmarshal(b, &decoded); err != nil {
		t.Fatal(err)
	}
	back := FromRendered(decoded, "@a:x")
	want, _ := json.Marshal(u)
	got, _ := json.Marshal(back)
	if string(got) != string(want) {
		t.Fatalf("FromRendered(Render(u)):\n got %s\nwant %s", got, want)
	}
	again, _ := json.Marshal(back.Render("@a:x"))
	if string(again) != string(b) {
		t.Fatalf("rendering again changed the rules:\n%s\n%s", again, b)
	}
}
