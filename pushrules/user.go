package pushrules

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// UserRules is what a user changed: their own rules and their changes to
// the server-default rules. Only this is stored (as the m.push_rules
// account data row); Render merges it with the defaults, so a change of the
// defaults in a new Hearth version reaches every user who did not override
// that rule.
type UserRules struct {
	// Custom holds the user's own rules per kind, most important first.
	Custom map[Kind][]Rule `json:"custom,omitempty"`
	// Defaults holds changes to server-default rules, by rule ID.
	Defaults map[string]DefaultChange `json:"defaults,omitempty"`
	// ThreadRules renders the postcontent thread subscription rules
	// (config thread_subscription_push_rules); not stored.
	ThreadRules bool `json:"-"`
}

// DefaultChange is a user's change to one server-default rule; nil fields
// keep the default.
type DefaultChange struct {
	Enabled *bool     `json:"enabled,omitempty"`
	Actions *[]Action `json:"actions,omitempty"`
}

// ParseUserRules decodes stored user rules; empty input is no changes.
func ParseUserRules(stored []byte) (UserRules, error) {
	var u UserRules
	if len(stored) == 0 {
		return u, nil
	}
	if err := json.Unmarshal(stored, &u); err != nil {
		return u, fmt.Errorf("decoding stored push rules: %w", err)
	}
	return u, nil
}

// Render returns the user's complete global ruleset. Within each kind the
// user's rules come before the server defaults, except .m.rule.master,
// which always comes first (push module, Predefined Rules).
func (u UserRules) Render(userID string) Ruleset {
	var rs Ruleset
	for _, k := range Kinds {
		defaults := Defaults(k, userID)
		if k == PostContent && !u.ThreadRules {
			defaults = nil
		}
		for i, d := range defaults {
			if ch, ok := u.Defaults[d.RuleID]; ok {
				if ch.Enabled != nil {
					d.Enabled = *ch.Enabled
				}
				if ch.Actions != nil {
					d.Actions = append([]Action{}, (*ch.Actions)...)
				}
				defaults[i] = d
			}
		}
		var rules []Rule
		if k == Override && len(defaults) > 0 && defaults[0].RuleID == MasterRuleID {
			rules = append(rules, defaults[0])
			defaults = defaults[1:]
		}
		rules = append(rules, u.Custom[k]...)
		rules = append(rules, defaults...)
		rs.setRules(k, rules)
	}
	return rs
}

// isDefault reports whether kind k has a server-default rule ruleID.
func isDefault(k Kind, ruleID string) bool {
	for _, d := range Defaults(k, "") {
		if d.RuleID == ruleID {
			return true
		}
	}
	return false
}

func notFound() error { return mxhttp.NotFound("The push rule was not found.") }

// NewRule is the body of PUT /pushrules/global/{kind}/{ruleId}.
type NewRule struct {
	Actions    *[]Action    `json:"actions"`
	Conditions *[]Condition `json:"conditions"`
	Pattern    *string      `json:"pattern"`
}

// ValidateRuleID checks the rule ID of a new user rule: server-default IDs
// (starting with a dot) are reserved, slashes and backslashes are not
// allowed (pushrules API, setPushRule), and room and sender rules are named
// by the room or user they apply to.
func ValidateRuleID(k Kind, ruleID string) error {
	switch {
	case ruleID == "":
		return mxhttp.InvalidParam("The rule ID must not be empty")
	case IsDefaultRuleID(ruleID):
		return mxhttp.InvalidParam("Rule IDs starting with '.' are reserved for server-default rules")
	case strings.ContainsAny(ruleID, `/\`):
		return mxhttp.InvalidParam("Rule IDs must not contain slashes or backslashes")
	case k == PostContent:
		return mxhttp.InvalidParam("Rules of kind postcontent are the server's only (MSC4306)")
	case k == Room && !strings.HasPrefix(ruleID, "!"):
		return mxhttp.InvalidParam("The rule ID of a room rule must be a room ID")
	case k == Sender && !strings.HasPrefix(ruleID, "@"):
		return mxhttp.InvalidParam("The rule ID of a sender rule must be a user ID")
	}
	return nil
}

// Put adds or replaces the user rule ruleID of kind k. A new rule goes
// first among the user's rules of its kind unless before or after name a
// user rule to place it next to (before wins when both are given); a
// replaced rule keeps its place and enabled state unless moved. A
// before/after that names no user rule of the kind is 400 M_UNKNOWN, as in
// the spec's example.
func (u *UserRules) Put(k Kind, ruleID string, nr NewRule, before, after string) error {
	if err := ValidateRuleID(k, ruleID); err != nil {
		return err
	}
	if nr.Actions == nil {
		return mxhttp.MissingParam("actions is required")
	}
	rule := Rule{RuleID: ruleID, Enabled: true, Actions: append([]Action{}, (*nr.Actions)...)}
	switch k {
	case Override, Underride:
		rule.Conditions = []Condition{}
		if nr.Conditions != nil {
			rule.Conditions = append(rule.Conditions, (*nr.Conditions)...)
		}
		for _, c := range rule.Conditions {
			if c.Kind == "" {
				return mxhttp.InvalidParam("Every condition needs a kind")
			}
		}
	case Content:
		if nr.Pattern == nil {
			return mxhttp.MissingParam("Content rules need a pattern")
		}
		p := *nr.Pattern
		rule.Pattern = &p
	}
	rules := slices.Clone(u.Custom[k])
	if i := slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID }); i >= 0 {
		rule.Enabled = rules[i].Enabled
		if before == "" && after == "" {
			rules[i] = rule
			u.setCustom(k, rules)
			return nil
		}
		rules = slices.Delete(rules, i, i+1)
	}
	at := 0
	if anchor := cmpOr(before, after); anchor != "" {
		j := slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == anchor })
		if j < 0 {
			return mxhttp.Unknown("before/after rule not found: %s", anchor)
		}
		at = j
		if before == "" {
			at = j + 1
		}
	}
	u.setCustom(k, slices.Insert(rules, at, rule))
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (u *UserRules) setCustom(k Kind, rules []Rule) {
	if u.Custom == nil {
		u.Custom = map[Kind][]Rule{}
	}
	if len(rules) == 0 {
		delete(u.Custom, k)
		return
	}
	u.Custom[k] = rules
}

// Delete removes a user rule. Server-default rules cannot be deleted (400
// M_INVALID_PARAM); an unknown rule is 404 M_NOT_FOUND.
func (u *UserRules) Delete(k Kind, ruleID string) error {
	if isDefault(k, ruleID) {
		return mxhttp.InvalidParam("Server-default rules cannot be deleted")
	}
	rules := u.Custom[k]
	i := slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID })
	if i < 0 {
		return notFound()
	}
	u.setCustom(k, slices.Delete(slices.Clone(rules), i, i+1))
	return nil
}

// SetEnabled enables or disables a user or server-default rule.
func (u *UserRules) SetEnabled(k Kind, ruleID string, enabled bool) error {
	return u.edit(k, ruleID, func(r *Rule) { r.Enabled = enabled }, func(c *DefaultChange) { c.Enabled = &enabled })
}

// SetActions replaces the actions of a user or server-default rule.
func (u *UserRules) SetActions(k Kind, ruleID string, actions []Action) error {
	actions = append([]Action{}, actions...)
	return u.edit(k, ruleID, func(r *Rule) { r.Actions = actions }, func(c *DefaultChange) { c.Actions = &actions })
}

func (u *UserRules) edit(k Kind, ruleID string, custom func(*Rule), def func(*DefaultChange)) error {
	if isDefault(k, ruleID) {
		if u.Defaults == nil {
			u.Defaults = map[string]DefaultChange{}
		}
		c := u.Defaults[ruleID]
		def(&c)
		u.Defaults[ruleID] = c
		return nil
	}
	rules := slices.Clone(u.Custom[k])
	i := slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID })
	if i < 0 {
		return notFound()
	}
	custom(&rules[i])
	u.setCustom(k, rules)
	return nil
}

// Get returns one rule of the rendered ruleset; 404 M_NOT_FOUND if there is
// none.
func (u UserRules) Get(userID string, k Kind, ruleID string) (Rule, error) {
	rs := u.Render(userID)
	r, ok := rs.Find(k, ruleID)
	if !ok {
		return r, notFound()
	}
	return r, nil
}

// CopyRoomRules adds, for a room upgraded from oldRoomID to newRoomID, a
// copy of each of the user's rules about the old room: the room rule named
// after it, and override and underride rules with an event_match on
// room_id for it. Existing rules of the new room are kept. It reports
// whether anything was added.
func (u *UserRules) CopyRoomRules(oldRoomID, newRoomID string) bool {
	added := false
	for _, k := range []Kind{Override, Room, Underride} {
		rules := u.Custom[k]
		exists := map[string]bool{}
		for _, r := range rules {
			exists[r.RuleID] = true
		}
		var copies []Rule
		for _, r := range rules {
			matches := k == Room && r.RuleID == oldRoomID
			var conds []Condition
			for _, c := range r.Conditions {
				if c.Kind == "event_match" && c.Key == "room_id" && c.Pattern != nil && *c.Pattern == oldRoomID {
					matches = true
					p := newRoomID
					c.Pattern = &p
				}
				conds = append(conds, c)
			}
			if !matches {
				continue
			}
			c := r
			c.RuleID = strings.ReplaceAll(r.RuleID, oldRoomID, newRoomID)
			c.Conditions = conds
			c.Actions = append([]Action{}, r.Actions...)
			if c.RuleID == r.RuleID || exists[c.RuleID] {
				continue
			}
			exists[c.RuleID] = true
			copies = append(copies, c)
		}
		if len(copies) > 0 {
			if u.Custom == nil {
				u.Custom = map[Kind][]Rule{}
			}
			u.Custom[k] = append(copies, rules...)
			added = true
		}
	}
	return added
}

// FromRendered is the inverse of Render, for rule sets kept whole by other
// servers (importing from Dendrite): the user's own rules in their order,
// and each server-default rule whose enabled state or actions differ from
// Hearth's default as a change. Default rules Hearth does not have are
// dropped, as Render would never show them.
func FromRendered(rs Ruleset, userID string) UserRules {
	var u UserRules
	for _, k := range Kinds {
		defaults := map[string]Rule{}
		for _, d := range Defaults(k, userID) {
			defaults[d.RuleID] = d
		}
		for _, r := range rs.Rules(k) {
			if !IsDefaultRuleID(r.RuleID) {
				if u.Custom == nil {
					u.Custom = map[Kind][]Rule{}
				}
				r.Default = false
				u.Custom[k] = append(u.Custom[k], r)
				continue
			}
			d, ok := defaults[r.RuleID]
			if !ok {
				continue
			}
			var ch DefaultChange
			if r.Enabled != d.Enabled {
				enabled := r.Enabled
				ch.Enabled = &enabled
			}
			got, _ := json.Marshal(r.Actions)
			want, _ := json.Marshal(d.Actions)
			if string(got) != string(want) {
				actions := append([]Action{}, r.Actions...)
				ch.Actions = &actions
			}
			if ch.Enabled != nil || ch.Actions != nil {
				if u.Defaults == nil {
					u.Defaults = map[string]DefaultChange{}
				}
				u.Defaults[r.RuleID] = ch
			}
		}
	}
	return u
}
