package pushrules

import (
	"encoding/json"
	"hash/fnv"
	"strconv"
	"strings"
)

// Rule groups: members whose stored rules are the same (most users: none,
// the server defaults) share one evaluation of an event. Their rendered
// rulesets differ only in the parts that name the member: their user ID
// (mentions, invites), their localpart (.m.rule.contains_user_name) and
// their display name, and in their thread subscriptions. Template is the
// group's ruleset for a member none of whose own parts match the event; a
// member whose parts may match (Candidates in package push) is evaluated
// with their own rules.

// templateUserID stands for "a member whose ID appears nowhere in the
// event"; rules that compare with it are left out of a template.
const templateUserID = "@\x00template:\x00"

// GroupKey identifies the group of users with these stored rules: equal
// keys, equal rules apart from the user's own parts.
func (u UserRules) GroupKey() int64 {
	b, _ := json.Marshal(u) // maps are sorted: canonical
	if string(b) == "{}" && !u.ThreadRules {
		return 0
	}
	h := fnv.New64a()
	h.Write(b)
	h.Write([]byte(strconv.FormatBool(u.ThreadRules)))
	return int64(h.Sum64() >> 1) // non-negative, and never 0 in practice
}

// Template compiles the group's rules as they are for a member whose own
// parts do not match: the rules that compare with the user ID or
// localpart are disabled; contains_display_name and thread subscriptions
// are answered by the RoomContext the template is evaluated with (no
// name, not subscribed).
func (u UserRules) Template() *Compiled {
	rs := u.Render(templateUserID)
	quoted, _ := json.Marshal(templateUserID)
	local := strings.TrimPrefix(strings.SplitN(templateUserID, ":", 2)[0], "@")
	for _, k := range Kinds {
		rules := rs.Rules(k)
		for i, r := range rules {
			own := r.Pattern != nil && *r.Pattern == local
			for _, c := range r.Conditions {
				if (c.Pattern != nil && *c.Pattern == templateUserID) || string(c.Value) == string(quoted) {
					own = true
				}
			}
			if own {
				rules[i].Enabled = false
			}
		}
	}
	return Compile(rs)
}

// Strings returns the string elements of an array property (dotted,
// escaped path).
func (ev *Event) Strings(path string) []string {
	p, ok := ev.props[path]
	if !ok || !p.isArr {
		return nil
	}
	var out []string
	for _, v := range p.array {
		var s string
		if json.Unmarshal([]byte(v), &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// FirstWord is the first run of word characters (ASCII letters, digits
// and _) of s, lowercased: wherever s matches as a word (the rule of
// content.body matching and contains_display_name), this run is one of
// Words(body). "" when s has none.
func FirstWord(s string) string {
	s = foldWords(s)
	start := -1
	for i := 0; i < len(s); i++ {
		if isWordByte(s[i]) {
			if start < 0 {
				start = i
			}
		} else if start >= 0 {
			return s[start:i]
		}
	}
	if start >= 0 {
		return s[start:]
	}
	return ""
}

// Words is the set of maximal runs of word characters of s, lowercased.
func Words(s string) map[string]bool {
	s = foldWords(s)
	out := map[string]bool{}
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && isWordByte(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out[s[start:i]] = true
			start = -1
		}
	}
	return out
}

func isWordByte(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// foldWords lowercases s, and turns the long s into s: the only other
// letter that case-insensitive matching (package glob, regexp's (?i))
// takes for an ASCII one (the Kelvin sign lowercases to k).
func foldWords(s string) string {
	return strings.ReplaceAll(strings.ToLower(s), "\u017f", "s")
}

// UsesThreadSubscriptions reports whether some enabled rule has MSC4306's
// thread_subscription condition.
func (c *Compiled) UsesThreadSubscriptions() bool {
	for _, r := range c.rules {
		for _, cond := range r.conds {
			if cond.kind == condThreadSub {
				return true
			}
		}
	}
	return false
}
