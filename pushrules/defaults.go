package pushrules

import "encoding/json"

// The server-default rules, exactly as listed under "Predefined Rules" in
// the push module of the spec (v1.17 removed the legacy body-matching rules
// .m.rule.contains_display_name, .m.rule.contains_user_name and
// .m.rule.roomnotif, so there are no default content rules). Their order
// within each kind is the spec's order.

const (
	MasterRuleID = ".m.rule.master"
	// userIDPlaceholder stands for "[the user's Matrix ID]" in the spec's
	// definitions; Defaults fills it in.
	userIDPlaceholder = "\x00user_id"
)

func cond(kind, key, pattern string) Condition {
	return Condition{Kind: kind, Key: key, Pattern: &pattern}
}

func condValue(kind, key string, value any) Condition {
	v, _ := json.Marshal(value)
	return Condition{Kind: kind, Key: key, Value: v}
}

var (
	soundDefault = SetTweak("sound", "default")
	highlight    = SetTweak("highlight", nil)
)

var defaultOverride = []Rule{
	{RuleID: MasterRuleID, Enabled: false, Conditions: []Condition{}, Actions: []Action{}},
	{RuleID: ".m.rule.suppress_notices", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "content.msgtype", "m.notice")}},
	{RuleID: ".m.rule.invite_for_me", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{
			cond("event_match", "type", "m.room.member"),
			cond("event_match", "content.membership", "invite"),
			cond("event_match", "state_key", userIDPlaceholder),
		}},
	{RuleID: ".m.rule.member_event", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "m.room.member")}},
	{RuleID: ".m.rule.is_user_mention", Enabled: true, Actions: []Action{Notify, soundDefault, highlight},
		Conditions: []Condition{condValue("event_property_contains", `content.m\.mentions.user_ids`, userIDPlaceholder)}},
	{RuleID: ".m.rule.is_room_mention", Enabled: true, Actions: []Action{Notify, highlight},
		Conditions: []Condition{
			condValue("event_property_is", `content.m\.mentions.room`, true),
			{Kind: "sender_notification_permission", Key: "room"},
		}},
	{RuleID: ".m.rule.tombstone", Enabled: true, Actions: []Action{Notify, highlight},
		Conditions: []Condition{cond("event_match", "type", "m.room.tombstone"), cond("event_match", "state_key", "")}},
	{RuleID: ".m.rule.reaction", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "m.reaction")}},
	{RuleID: ".m.rule.room.server_acl", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "m.room.server_acl"), cond("event_match", "state_key", "")}},
	{RuleID: ".m.rule.suppress_edits", Enabled: true, Actions: []Action{},
		Conditions: []Condition{condValue("event_property_is", `content.m\.relates_to.rel_type`, "m.replace")}},
}

var defaultUnderride = []Rule{
	{RuleID: ".m.rule.call", Enabled: true, Actions: []Action{Notify, SetTweak("sound", "ring")},
		Conditions: []Condition{cond("event_match", "type", "m.call.invite")}},
	{RuleID: ".m.rule.encrypted_room_one_to_one", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, cond("event_match", "type", "m.room.encrypted")}},
	{RuleID: ".m.rule.room_one_to_one", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, cond("event_match", "type", "m.room.message")}},
	{RuleID: ".m.rule.message", Enabled: true, Actions: []Action{Notify},
		Conditions: []Condition{cond("event_match", "type", "m.room.message")}},
	{RuleID: ".m.rule.encrypted", Enabled: true, Actions: []Action{Notify},
		Conditions: []Condition{cond("event_match", "type", "m.room.encrypted")}},
}

// Defaults returns the server-default rules of kind k for userID, in
// priority order, with the user's ID filled in. The slices are fresh copies.
func Defaults(k Kind, userID string) []Rule {
	var src []Rule
	switch k {
	case Override:
		src = defaultOverride
	case Underride:
		src = defaultUnderride
	default:
		return nil
	}
	quotedID, _ := json.Marshal(userID)
	quotedPlaceholder, _ := json.Marshal(userIDPlaceholder)
	out := make([]Rule, len(src))
	for i, r := range src {
		r.Default = true
		r.Actions = append([]Action{}, r.Actions...)
		conds := make([]Condition, len(r.Conditions))
		for j, c := range r.Conditions {
			if c.Pattern != nil && *c.Pattern == userIDPlaceholder {
				c.Pattern = &userID
			}
			if string(c.Value) == string(quotedPlaceholder) {
				c.Value = quotedID
			}
			conds[j] = c
		}
		r.Conditions = conds
		out[i] = r
	}
	return out
}

// IsDefaultRuleID reports whether a rule ID is reserved for server-default
// rules (they start with a dot).
func IsDefaultRuleID(ruleID string) bool { return len(ruleID) > 0 && ruleID[0] == '.' }
