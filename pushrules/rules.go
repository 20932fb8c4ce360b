// Package pushrules holds the push rule data model (client-server API, Push
// Notifications module): rules, conditions, actions, the spec's server-default
// rules, and a user's changes to them. The push rule API stores and edits
// rules with it; push evaluation reads the same types.
package pushrules

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Kind is a push rule kind. Kinds are listed in the order rules are checked.
type Kind string

const (
	Override Kind = "override"
	Content  Kind = "content"
	// PostContent is MSC4306's kind between content and room, holding only
	// its two server-default thread subscription rules; clients may not add
	// rules to it.
	PostContent Kind = "postcontent"
	Room        Kind = "room"
	Sender      Kind = "sender"
	Underride   Kind = "underride"
)

// Kinds lists every kind in evaluation order.
var Kinds = []Kind{Override, Content, PostContent, Room, Sender, Underride}

// ParseKind checks a kind from a request path.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// Rule is one push rule as clients see it.
type Rule struct {
	RuleID  string   `json:"rule_id"`
	Default bool     `json:"default"`
	Enabled bool     `json:"enabled"`
	Actions []Action `json:"actions"`
	// Conditions of override, postcontent and underride rules (nil for other kinds,
	// whose rule_id or pattern is their condition).
	Conditions []Condition `json:"-"`
	// Pattern of content rules.
	Pattern *string `json:"pattern,omitempty"`
}

// MarshalJSON writes conditions for override and underride rules even when
// there are none ("conditions": [] matches every event) and leaves them out
// for the other kinds.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	out := struct {
		plain
		Conditions *[]Condition `json:"conditions,omitempty"`
	}{plain: plain(r)}
	if r.Conditions != nil {
		out.Conditions = &r.Conditions
	}
	if out.Actions == nil {
		out.Actions = []Action{}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads conditions back (MarshalJSON hides the field from the
// default encoding).
func (r *Rule) UnmarshalJSON(b []byte) error {
	type plain Rule
	in := struct {
		*plain
		Conditions *[]Condition `json:"conditions"`
	}{plain: (*plain)(r)}
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if in.Conditions != nil {
		r.Conditions = *in.Conditions
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
	}
	return nil
}

// Condition is one condition of an override or underride rule. Kinds the
// server does not know are kept, and never match.
type Condition struct {
	Kind string `json:"kind"`
	// Key: the dotted event property (event_match, event_property_is,
	// event_property_contains) or the power level key
	// (sender_notification_permission).
	Key string `json:"key,omitempty"`
	// Pattern: the glob of event_match. A pointer, since "" is a pattern
	// (it matches an empty state_key).
	Pattern *string `json:"pattern,omitempty"`
	// Is: room_member_count's comparison, such as "2" or ">=10".
	Is string `json:"is,omitempty"`
	// Value: the JSON scalar of event_property_is / event_property_contains.
	// nil when absent; the JSON literal null is kept as "null".
	Value json.RawMessage `json:"value,omitempty"`
	// Subscribed: MSC4306's thread_subscription condition.
	Subscribed *bool `json:"subscribed,omitempty"`
}

// Action is one action of a rule: notify, a historical dont_notify or
// coalesce (kept as given; evaluation ignores them), or a set_tweak with an
// optional value.
type Action struct {
	Name  string          // "notify", "dont_notify", "coalesce" or "set_tweak"
	Tweak string          // set_tweak only: the tweak's name
	Value json.RawMessage // set_tweak only: nil when absent
}

// Notify is the notify action.
var Notify = Action{Name: "notify"}

// SetTweak returns a set_tweak action; value nil means no value.
func SetTweak(tweak string, value any) Action {
	a := Action{Name: "set_tweak", Tweak: tweak}
	if value != nil {
		a.Value, _ = json.Marshal(value)
	}
	return a
}

// MarshalJSON writes actions as the spec does: a bare string for actions
// without parameters, an object for set_tweak.
func (a Action) MarshalJSON() ([]byte, error) {
	if a.Name != "set_tweak" {
		return json.Marshal(a.Name)
	}
	m := map[string]any{"set_tweak": a.Tweak}
	if a.Value != nil {
		m["value"] = a.Value
	}
	return json.Marshal(m)
}

// UnmarshalJSON accepts a string action or a set_tweak object.
func (a *Action) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "notify", "dont_notify", "coalesce":
			*a = Action{Name: s}
			return nil
		}
		return fmt.Errorf("unknown action %q", s)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("an action must be a string or an object")
	}
	raw, ok := m["set_tweak"]
	var tweak string
	if !ok || json.Unmarshal(raw, &tweak) != nil || tweak == "" {
		return fmt.Errorf("an action object must have a set_tweak string")
	}
	*a = Action{Name: "set_tweak", Tweak: tweak, Value: m["value"]}
	return nil
}

// Ruleset is the rules of one scope ("global"), by kind, each list in
// priority order.
type Ruleset struct {
	Override []Rule `json:"override"`
	Content  []Rule `json:"content"`
	// PostContent is left out when empty (thread subscription rules off).
	PostContent []Rule `json:"postcontent,omitempty"`
	Room        []Rule `json:"room"`
	Sender      []Rule `json:"sender"`
	Underride   []Rule `json:"underride"`
}

// Rules returns the list of one kind.
func (rs *Ruleset) Rules(k Kind) []Rule {
	switch k {
	case Override:
		return rs.Override
	case Content:
		return rs.Content
	case PostContent:
		return rs.PostContent
	case Room:
		return rs.Room
	case Sender:
		return rs.Sender
	default:
		return rs.Underride
	}
}

func (rs *Ruleset) setRules(k Kind, rules []Rule) {
	if rules == nil {
		rules = []Rule{}
	}
	switch k {
	case Override:
		rs.Override = rules
	case Content:
		rs.Content = rules
	case PostContent:
		if len(rules) == 0 {
			rules = nil
		}
		rs.PostContent = rules
	case Room:
		rs.Room = rules
	case Sender:
		rs.Sender = rules
	default:
		rs.Underride = rules
	}
}

// Find returns the rule of kind k with the given ID.
func (rs *Ruleset) Find(k Kind, ruleID string) (Rule, bool) {
	for _, r := range rs.Rules(k) {
		if r.RuleID == ruleID {
			return r, true
		}
	}
	return Rule{}, false
}
