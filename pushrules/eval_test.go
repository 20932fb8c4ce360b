package pushrules

import (
	"encoding/json"
	"testing"
)

type fakeRoom struct {
	members int
	name    string
	canRoom bool
	threads map[string]bool // subscribed threads
}

func (f fakeRoom) MemberCount() int                { return f.members }
func (f fakeRoom) DisplayName() string             { return f.name }
func (f fakeRoom) SenderCanNotify(key string) bool { return key == "room" && f.canRoom }
func (f fakeRoom) ThreadSubscribed(id string) bool { return f.threads[id] }

func mustEvent(t *testing.T, v any) *Event {
	t.Helper()
	b, _ := json.Marshal(v)
	ev, err := NewEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestEvaluateDefaults(t *testing.T) {
	bob := "@bob:hearth.test"
	c := Compile(UserRules{}.Render(bob))
	msg := func(content map[string]any) map[string]any {
		return map[string]any{"type": "m.room.message", "sender": "@alice:hearth.test", "room_id": "!r:hearth.test", "content": content}
	}
	cases := []struct {
		name           string
		ev             map[string]any
		room           fakeRoom
		rule           string
		notify, hlight bool
	}{
		{"message in a group", msg(map[string]any{"body": "hi", "msgtype": "m.text"}), fakeRoom{members: 3}, ".m.rule.message", true, false},
		{"one to one", msg(map[string]any{"body": "hi"}), fakeRoom{members: 2}, ".m.rule.room_one_to_one", true, false},
		{"notice", msg(map[string]any{"body": "hi", "msgtype": "m.notice"}), fakeRoom{members: 3}, ".m.rule.suppress_notices", false, false},
		{"user mention", msg(map[string]any{"body": "hi", "m.mentions": map[string]any{"user_ids": []any{bob}}}), fakeRoom{members: 3}, ".m.rule.is_user_mention", true, true},
		{"room mention allowed", msg(map[string]any{"body": "hi", "m.mentions": map[string]any{"room": true}}), fakeRoom{members: 3, canRoom: true}, ".m.rule.is_room_mention", true, true},
		{"room mention without permission", msg(map[string]any{"body": "hi", "m.mentions": map[string]any{"room": true}}), fakeRoom{members: 3}, ".m.rule.message", true, false},
		{"room mention as string does not count", msg(map[string]any{"body": "hi", "m.mentions": map[string]any{"room": "true"}}), fakeRoom{members: 3, canRoom: true}, ".m.rule.message", true, false},
		{"edit", msg(map[string]any{"body": "hi", "m.relates_to": map[string]any{"rel_type": "m.replace"}}), fakeRoom{members: 3}, ".m.rule.suppress_edits", false, false},
		{"invite for me", map[string]any{"type": "m.room.member", "state_key": bob, "content": map[string]any{"membership": "invite"}}, fakeRoom{members: 3}, ".m.rule.invite_for_me", true, false},
		{"unknown type", map[string]any{"type": "m.custom", "content": map[string]any{}}, fakeRoom{members: 3}, "", false, false},
		// The legacy body mention rules (kept, issue #5) unless the event has m.mentions (MSC3952).
		{"user name in body", msg(map[string]any{"body": "ping @bob:hearth.test please"}), fakeRoom{members: 3}, ".m.rule.contains_user_name", true, true},
		{"user name inside a word", msg(map[string]any{"body": "bobsleigh"}), fakeRoom{members: 3}, ".m.rule.message", true, false},
		{"display name in body", msg(map[string]any{"body": "Hi Bobby Tables!"}), fakeRoom{members: 3, name: "Bobby Tables"}, ".m.rule.contains_display_name", true, true},
		{"display name inside a word", msg(map[string]any{"body": "Roberta and robert_x"}), fakeRoom{members: 3, name: "Robert"}, ".m.rule.message", true, false},
		{"display name at the end", msg(map[string]any{"body": "thanks, ROBERT"}), fakeRoom{members: 3, name: "Robert"}, ".m.rule.contains_display_name", true, true},
		{"@room allowed", msg(map[string]any{"body": "@room lunch"}), fakeRoom{members: 3, canRoom: true}, ".m.rule.roomnotif", true, true},
		{"@room without permission", msg(map[string]any{"body": "@room lunch"}), fakeRoom{members: 3}, ".m.rule.message", true, false},
		{"user name in body with m.mentions", msg(map[string]any{"body": "@bob:hearth.test", "m.mentions": map[string]any{}}), fakeRoom{members: 3}, ".m.rule.message", true, false},
		{"display name with m.mentions of others", msg(map[string]any{"body": "Bobby Tables", "m.mentions": map[string]any{"user_ids": []any{"@carol:hearth.test"}}}), fakeRoom{members: 3, name: "Bobby Tables"}, ".m.rule.message", true, false},
		{"@room with m.mentions", msg(map[string]any{"body": "@room", "m.mentions": map[string]any{}}), fakeRoom{members: 3, canRoom: true}, ".m.rule.message", true, false},
		{"m.mentions null still counts", msg(map[string]any{"body": "@room", "m.mentions": nil}), fakeRoom{members: 3, canRoom: true}, ".m.rule.message", true, false},
		// Polls (MSC3930).
		{"poll start one to one", map[string]any{"type": "org.matrix.msc3381.poll.start", "content": map[string]any{}}, fakeRoom{members: 2}, ".org.matrix.msc3930.rule.poll_start_one_to_one", true, false},
		{"poll start", map[string]any{"type": "org.matrix.msc3381.poll.start", "content": map[string]any{}}, fakeRoom{members: 4}, ".org.matrix.msc3930.rule.poll_start", true, false},
		{"poll end one to one", map[string]any{"type": "org.matrix.msc3381.poll.end", "content": map[string]any{}}, fakeRoom{members: 2}, ".org.matrix.msc3930.rule.poll_end_one_to_one", true, false},
		{"poll end", map[string]any{"type": "org.matrix.msc3381.poll.end", "content": map[string]any{}}, fakeRoom{members: 4}, ".org.matrix.msc3930.rule.poll_end", true, false},
		{"poll response", map[string]any{"type": "org.matrix.msc3381.poll.response", "content": map[string]any{}}, fakeRoom{members: 2}, ".org.matrix.msc3930.rule.poll_response", false, false},
	}
	for _, tc := range cases {
		r := c.Evaluate(mustEvent(t, tc.ev), tc.room)
		if r.RuleID != tc.rule || r.Notify != tc.notify || r.Highlight != tc.hlight {
			t.Errorf("%s: got %+v, want rule %s notify %v highlight %v", tc.name, r, tc.rule, tc.notify, tc.hlight)
		}
	}
}

func TestEvaluateConditions(t *testing.T) {
	ev := mustEvent(t, map[string]any{"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x", "content": map[string]any{
		"body": "An example event.", "topic": "Lunch plans", "m.federate": true, "n": 42, "a.b": map[string]any{`c\d`: "deep"},
		"list": []any{"#x:y", 3, true, nil, map[string]any{}}}})
	pat := func(s string) *string { return &s }
	cases := []struct {
		cond Condition
		room fakeRoom
		want bool
	}{
		{Condition{Kind: "event_match", Key: "content.topic", Pattern: pat("lunc?*")}, fakeRoom{}, true},
		{Condition{Kind: "event_match", Key: "content.topic", Pattern: pat("LUNCH PLANS")}, fakeRoom{}, true},
		{Condition{Kind: "event_match", Key: "content.topic", Pattern: pat("lunc")}, fakeRoom{}, false},
		{Condition{Kind: "event_match", Key: "content.n", Pattern: pat("*")}, fakeRoom{}, false},
		{Condition{Kind: "event_match", Key: "content.missing", Pattern: pat("*")}, fakeRoom{}, false},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: pat("ex*ple")}, fakeRoom{}, true},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: pat("exam")}, fakeRoom{}, false},
		{Condition{Kind: "event_match", Key: "content.body", Pattern: pat("event")}, fakeRoom{}, true},
		{Condition{Kind: "event_match", Key: `content.a\.b.c\\d`, Pattern: pat("deep")}, fakeRoom{}, true},
		{Condition{Kind: "event_match", Key: `content.a.b.c\\d`, Pattern: pat("deep")}, fakeRoom{}, false},
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`true`)}, fakeRoom{}, true},
		{Condition{Kind: "event_property_is", Key: `content.m\.federate`, Value: json.RawMessage(`"true"`)}, fakeRoom{}, false},
		{Condition{Kind: "event_property_is", Key: "content.n", Value: json.RawMessage(`42`)}, fakeRoom{}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`"#x:y"`)}, fakeRoom{}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`null`)}, fakeRoom{}, true},
		{Condition{Kind: "event_property_contains", Key: "content.list", Value: json.RawMessage(`":y"`)}, fakeRoom{}, false},
		{Condition{Kind: "event_property_contains", Key: "content.body", Value: json.RawMessage(`"An example event."`)}, fakeRoom{}, false},
		{Condition{Kind: "contains_display_name"}, fakeRoom{name: "Example"}, true},
		{Condition{Kind: "contains_display_name"}, fakeRoom{name: "xam"}, false},
		{Condition{Kind: "contains_display_name"}, fakeRoom{}, false},
		{Condition{Kind: "room_member_count", Is: "2"}, fakeRoom{members: 2}, true},
		{Condition{Kind: "room_member_count", Is: "<10"}, fakeRoom{members: 10}, false},
		{Condition{Kind: "room_member_count", Is: "<=10"}, fakeRoom{members: 10}, true},
		{Condition{Kind: "room_member_count", Is: ">=3"}, fakeRoom{members: 2}, false},
		{Condition{Kind: "room_member_count", Is: ">1"}, fakeRoom{members: 2}, true},
		{Condition{Kind: "room_member_count", Is: "==x"}, fakeRoom{members: 2}, false},
		{Condition{Kind: "sender_notification_permission", Key: "room"}, fakeRoom{canRoom: true}, true},
		{Condition{Kind: "org.example.unknown"}, fakeRoom{}, false},
	}
	for _, tc := range cases {
		rs := Ruleset{Override: []Rule{{RuleID: "r", Enabled: true, Actions: []Action{Notify}, Conditions: []Condition{tc.cond}}}}
		got := Compile(rs).Evaluate(ev, tc.room).Notify
		if got != tc.want {
			t.Errorf("%+v (pattern %v, value %s) with %+v: got %v, want %v", tc.cond, tc.cond.Pattern, tc.cond.Value, tc.room, got, tc.want)
		}
	}
}

func TestEvaluateUserRules(t *testing.T) {
	bob := "@bob:hearth.test"
	var u UserRules
	actions := []Action{Notify, SetTweak("highlight", false)}
	if err := u.Put(Content, "beer", NewRule{Actions: &actions, Pattern: ptr("be?r")}, "", ""); err != nil {
		t.Fatal(err)
	}
	none := []Action{}
	if err := u.Put(Room, "!quiet:x", NewRule{Actions: &none}, "", ""); err != nil {
		t.Fatal(err)
	}
	c := Compile(u.Render(bob))
	ev := mustEvent(t, map[string]any{"type": "m.room.message", "room_id": "!r:x", "content": map[string]any{"body": "Fancy a BEER?"}})
	if r := c.Evaluate(ev, fakeRoom{members: 5}); r.RuleID != "beer" || !r.Notify || r.Highlight {
		t.Errorf("content rule: %+v", r)
	}
	quiet := mustEvent(t, map[string]any{"type": "m.room.message", "room_id": "!quiet:x", "content": map[string]any{"body": "hi"}})
	if r := c.Evaluate(quiet, fakeRoom{members: 5}); r.RuleID != "!quiet:x" || r.Notify {
		t.Errorf("room rule: %+v", r)
	}
	if err := u.SetEnabled(Override, MasterRuleID, true); err != nil {
		t.Fatal(err)
	}
	if r := Compile(u.Render(bob)).Evaluate(ev, fakeRoom{members: 5}); r.RuleID != MasterRuleID || r.Notify {
		t.Errorf("master rule: %+v", r)
	}
}

// BenchmarkEvaluate is one recipient's evaluation of a plain message with
// the default rules (the common case of the notification fan-out).
func BenchmarkEvaluate(b *testing.B) {
	c := Compile(UserRules{}.Render("@bob:hearth.test"))
	raw, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": "@a:x", "room_id": "!r:x",
		"content": map[string]any{"body": "hello there", "msgtype": "m.text"}})
	ev, _ := NewEvent(raw)
	room := fakeRoom{members: 20}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !c.Evaluate(ev, room).Notify {
			b.Fatal("no notify")
		}
	}
}

// MSC4306's thread_subscription condition: only events in a thread match,
// by the recipient's subscription to its root; without subscribed it
// never matches.
func TestThreadSubscriptionCondition(t *testing.T) {
	yes, no := true, false
	rule := func(sub *bool) Ruleset {
		return Ruleset{Override: []Rule{{RuleID: "threads", Enabled: true, Actions: []Action{Notify},
			Conditions: []Condition{{Kind: ThreadSubscriptionCondition, Subscribed: sub}}}}}
	}
	inThread := mustEvent(t, map[string]any{"type": "m.room.message", "content": map[string]any{"body": "x",
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": "$root"}}})
	reply := mustEvent(t, map[string]any{"type": "m.room.message", "content": map[string]any{"body": "x",
		"m.relates_to": map[string]any{"rel_type": "m.reference", "event_id": "$root"}}})
	plain := mustEvent(t, map[string]any{"type": "m.room.message", "content": map[string]any{"body": "x"}})
	subscribed := fakeRoom{threads: map[string]bool{"$root": true}}
	for _, c := range []struct {
		name string
		sub  *bool
		ev   *Event
		room fakeRoom
		want bool
	}{
		{"subscribed thread, subscribed: true", &yes, inThread, subscribed, true},
		{"subscribed thread, subscribed: false", &no, inThread, subscribed, false},
		{"unsubscribed thread, subscribed: false", &no, inThread, fakeRoom{}, true},
		{"unsubscribed thread, subscribed: true", &yes, inThread, fakeRoom{}, false},
		{"not a thread relation", &no, reply, fakeRoom{}, false},
		{"no relation", &no, plain, fakeRoom{}, false},
		{"no subscribed field", nil, inThread, subscribed, false},
	} {
		if got := Compile(rule(c.sub)).Evaluate(c.ev, c.room).Notify; got != c.want {
			t.Errorf("%s: notify %v, want %v", c.name, got, c.want)
		}
	}
	// The field survives a round trip through a stored rule.
	b, _ := json.Marshal(Condition{Kind: ThreadSubscriptionCondition, Subscribed: &no})
	if string(b) != `{"kind":"io.element.msc4306.thread_subscription","subscribed":false}` {
		t.Fatalf("encoded as %s", b)
	}
}
