package pushrules

import (
	"encoding/json"
	"strings"
)

// The server-default rules: those listed under "Predefined Rules" in the
// push module of the spec, in the spec's order within each kind, plus two
// groups the current spec does not list:
//
//   - The legacy mention rules .m.rule.contains_display_name (override),
//     .m.rule.contains_user_name (content) and .m.rule.roomnotif (override),
//     which v1.17 removed and we keep (issue #5): bridges and older clients
//     still put mentions only in the body, and their users expect those to
//     ping. They are defined and placed as in v1.7-v1.16 of the spec. As
//     intentional mentions (MSC3952, spec v1.7) require, they never apply to
//     an event whose content has an m.mentions property (see
//     LegacyMentionRule), so a client that sends m.mentions is not
//     second-guessed by its body. Users can disable them like any default.
//   - The poll rules of MSC3930, with their unstable IDs.

const (
	MasterRuleID = ".m.rule.master"
	// userIDPlaceholder stands for "[the user's Matrix ID]" in the spec's
	// definitions; Defaults fills it in.
	userIDPlaceholder = "\x00user_id"
	// localpartPlaceholder stands for "[the local part of the user's
	// Matrix ID]" (.m.rule.contains_user_name).
	localpartPlaceholder = "\x00localpart"
)

// legacyMentionRules are the default rules that look for mentions in the
// body; MSC3952 (spec v1.7) makes them not apply to events with an
// m.mentions property.
var legacyMentionRules = map[string]bool{
	".m.rule.contains_display_name": true,
	".m.rule.contains_user_name":    true,
	".m.rule.roomnotif":             true,
}

// LegacyMentionRule reports whether ruleID is one of the legacy
// body-matching mention rules, which do not apply to events whose content
// has m.mentions.
func LegacyMentionRule(ruleID string) bool { return legacyMentionRules[ruleID] }

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
	{RuleID: ".m.rule.contains_display_name", Enabled: true, Actions: []Action{Notify, soundDefault, highlight},
		Conditions: []Condition{{Kind: "contains_display_name"}}},
	{RuleID: ".m.rule.is_room_mention", Enabled: true, Actions: []Action{Notify, highlight},
		Conditions: []Condition{
			condValue("event_property_is", `content.m\.mentions.room`, true),
			{Kind: "sender_notification_permission", Key: "room"},
		}},
	{RuleID: ".m.rule.roomnotif", Enabled: true, Actions: []Action{Notify, highlight},
		Conditions: []Condition{
			cond("event_match", "content.body", "@room"),
			{Kind: "sender_notification_permission", Key: "room"},
		}},
	{RuleID: ".m.rule.tombstone", Enabled: true, Actions: []Action{Notify, highlight},
		Conditions: []Condition{cond("event_match", "type", "m.room.tombstone"), cond("event_match", "state_key", "")}},
	{RuleID: ".m.rule.reaction", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "m.reaction")}},
	{RuleID: ".m.rule.room.server_acl", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "m.room.server_acl"), cond("event_match", "state_key", "")}},
	// MSC3930 (push rules for polls): poll responses never notify. The MSC
	// puts the rule right after .m.rule.room.server_acl; until it is in the
	// spec it carries the unstable ID and matches the event type MSC3381
	// polls are sent with today (org.matrix.msc3381.*).
	{RuleID: ".org.matrix.msc3930.rule.poll_response", Enabled: true, Actions: []Action{},
		Conditions: []Condition{cond("event_match", "type", "org.matrix.msc3381.poll.response")}},
	{RuleID: ".m.rule.suppress_edits", Enabled: true, Actions: []Action{},
		Conditions: []Condition{condValue("event_property_is", `content.m\.relates_to.rel_type`, "m.replace")}},
}

var defaultContent = []Rule{
	{RuleID: ".m.rule.contains_user_name", Enabled: true, Actions: []Action{Notify, soundDefault, highlight},
		Pattern: ptr(localpartPlaceholder)},
}

func ptr(s string) *string { return &s }

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
	// MSC3930: poll starts and ends notify like messages (the one-to-one
	// rules first, with a sound), inserted right after .m.rule.encrypted in
	// the MSC's order; unstable IDs and MSC3381 event types as above.
	{RuleID: ".org.matrix.msc3930.rule.poll_start_one_to_one", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, cond("event_match", "type", "org.matrix.msc3381.poll.start")}},
	{RuleID: ".org.matrix.msc3930.rule.poll_start", Enabled: true, Actions: []Action{Notify},
		Conditions: []Condition{cond("event_match", "type", "org.matrix.msc3381.poll.start")}},
	{RuleID: ".org.matrix.msc3930.rule.poll_end_one_to_one", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{{Kind: "room_member_count", Is: "2"}, cond("event_match", "type", "org.matrix.msc3381.poll.end")}},
	{RuleID: ".org.matrix.msc3930.rule.poll_end", Enabled: true, Actions: []Action{Notify},
		Conditions: []Condition{cond("event_match", "type", "org.matrix.msc3381.poll.end")}},
}

// defaultPostContent are MSC4306's rules (unstable IDs): events in threads
// the user is not subscribed to do not notify (mentions and keywords,
// matched before, still do); events in subscribed threads notify, whatever
// the room's rules say.
var defaultPostContent = []Rule{
	{RuleID: ".io.element.msc4306.rule.unsubscribed_thread", Enabled: true, Actions: []Action{},
		Conditions: []Condition{{Kind: ThreadSubscriptionCondition, Subscribed: new(false)}}},
	{RuleID: ".io.element.msc4306.rule.subscribed_thread", Enabled: true, Actions: []Action{Notify, soundDefault},
		Conditions: []Condition{{Kind: ThreadSubscriptionCondition, Subscribed: new(true)}}},
}

// Defaults returns the server-default rules of kind k for userID, in
// priority order, with the user's ID filled in. The slices are fresh copies.
func Defaults(k Kind, userID string) []Rule {
	var src []Rule
	switch k {
	case Override:
		src = defaultOverride
	case Content:
		src = defaultContent
	case PostContent:
		src = defaultPostContent
	case Underride:
		src = defaultUnderride
	default:
		return nil
	}
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	quotedID, _ := json.Marshal(userID)
	quotedPlaceholder, _ := json.Marshal(userIDPlaceholder)
	out := make([]Rule, len(src))
	for i, r := range src {
		r.Default = true
		r.Actions = append([]Action{}, r.Actions...)
		if r.Pattern != nil && *r.Pattern == localpartPlaceholder {
			r.Pattern = &localpart
		}
		var conds []Condition // nil stays nil: content rules have no conditions
		if r.Conditions != nil {
			conds = make([]Condition, len(r.Conditions))
		}
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
