package pushrules

import (
	"encoding/json"
	"testing"
)

// A group's template is the ruleset of a member none of whose own parts
// (ID, localpart, display name, thread subscriptions) match: it never
// takes a mention, an invite or a body mention for its own, and otherwise
// agrees with every member's own rules.
func TestTemplate(t *testing.T) {
	bob := "@bob:hearth.test"
	own := Compile(UserRules{}.Render(bob))
	tmpl := UserRules{}.Template()
	msg := func(content map[string]any) *Event {
		return mustEvent(t, map[string]any{"type": "m.room.message", "sender": "@alice:hearth.test", "room_id": "!r:hearth.test", "content": content})
	}
	cases := []struct {
		name      string
		ev        *Event
		tmplRule  string
		ownRule   string
		ownHlight bool
	}{
		{"plain", msg(map[string]any{"body": "hi"}), ".m.rule.message", ".m.rule.message", false},
		{"mention", msg(map[string]any{"body": "hi", "m.mentions": map[string]any{"user_ids": []any{bob}}}), ".m.rule.message", ".m.rule.is_user_mention", true},
		{"localpart in body", msg(map[string]any{"body": "hey bob"}), ".m.rule.message", ".m.rule.contains_user_name", true},
		{"a NUL in the body", msg(map[string]any{"body": "\x00"}), ".m.rule.message", ".m.rule.message", false},
		{"invite", mustEvent(t, map[string]any{"type": "m.room.member", "state_key": bob, "content": map[string]any{"membership": "invite"}}), ".m.rule.member_event", ".m.rule.invite_for_me", false},
	}
	for _, c := range cases {
		got := tmpl.Evaluate(c.ev, fakeRoom{members: 3})
		if got.RuleID != c.tmplRule {
			t.Errorf("%s: template matched %q, want %q", c.name, got.RuleID, c.tmplRule)
		}
		mine := own.Evaluate(c.ev, fakeRoom{members: 3})
		if mine.RuleID != c.ownRule || mine.Highlight != c.ownHlight {
			t.Errorf("%s: own rules matched %q (highlight %v)", c.name, mine.RuleID, mine.Highlight)
		}
		if first := FirstWord("bob"); c.ownRule == ".m.rule.contains_user_name" {
			if body, _ := c.ev.String("content.body"); !Words(body)[first] {
				t.Errorf("%s: the localpart's first word %q is not a word of %q", c.name, first, body)
			}
		}
	}
}

func TestGroupKeyAndWords(t *testing.T) {
	if k := (UserRules{}).GroupKey(); k != 0 {
		t.Fatalf("default group key %d", k)
	}
	off := false
	a := UserRules{Defaults: map[string]DefaultChange{".m.rule.message": {Enabled: &off}}}
	var b UserRules
	raw, _ := json.Marshal(a)
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	if a.GroupKey() == 0 || a.GroupKey() != b.GroupKey() || a.GroupKey() == (UserRules{ThreadRules: true}).GroupKey() {
		t.Fatalf("group keys: %d %d", a.GroupKey(), b.GroupKey())
	}
	if w := FirstWord("[bot] Dave Grohl"); w != "bot" {
		t.Fatalf("first word %q", w)
	}
	if w := FirstWord("Алиса"); w != "" {
		t.Fatalf("first word of a name without ASCII letters %q", w)
	}
	words := Words("Hi, Dave-Grohl! \u017fam \u212Aate")
	for _, w := range []string{"hi", "dave", "grohl", "sam", "kate"} {
		if !words[w] {
			t.Errorf("%q not among %v", w, words)
		}
	}
}
