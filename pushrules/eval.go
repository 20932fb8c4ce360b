package pushrules

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/hearth-matrix/hearth/glob"
)

// Push rule evaluation (push module, Push Rules: conditions and actions).
// A user's ruleset is compiled once (globs to matchers, keys to the
// flattened form) and then run against many events; an event is flattened
// once and then checked against many users' rules.

// Event is an event prepared for evaluation: its properties flattened to
// dot-separated paths (dots and backslashes inside a key escaped with a
// backslash, as the spec's dot-separated property paths do), so that a
// condition's key is one map lookup.
type Event struct {
	props map[string]prop
	// hasMentions: the content has an m.mentions property (whatever its
	// value), which turns the legacy mention rules off (MSC3952).
	hasMentions bool
}

// prop is one property value: the string of a string value, the canonical
// JSON of a scalar (for exact matches), or the scalars of an array.
type prop struct {
	str    string
	isStr  bool
	scalar string   // canonical JSON of a string, number, boolean or null; "" otherwise
	array  []string // canonical JSON of the scalar elements of an array
	isArr  bool
}

// skipTopLevel are PDU fields no push rule can sensibly match and that
// are large: not flattened.
var skipTopLevel = map[string]bool{"auth_events": true, "prev_events": true, "hashes": true, "signatures": true, "unsigned": true}

// NewEvent flattens an event's JSON (PDU or client format).
func NewEvent(eventJSON []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(eventJSON))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		return nil, fmt.Errorf("decoding event for push rules: %w", err)
	}
	ev := &Event{props: make(map[string]prop, 16)}
	if content, ok := top["content"].(map[string]any); ok {
		_, ev.hasMentions = content["m.mentions"]
	}
	for k, v := range top {
		if skipTopLevel[k] {
			continue
		}
		ev.flatten(escapeKey(k), v)
	}
	return ev, nil
}

func (ev *Event) flatten(path string, v any) {
	switch x := v.(type) {
	case map[string]any:
		for k, sub := range x {
			ev.flatten(path+"."+escapeKey(k), sub)
		}
	case []any:
		p := prop{isArr: true}
		for _, e := range x {
			if s := canonicalScalar(e); s != "" {
				p.array = append(p.array, s)
			}
		}
		ev.props[path] = p
	default:
		p := prop{scalar: canonicalScalar(x)}
		if s, ok := x.(string); ok {
			p.str, p.isStr = s, true
		}
		ev.props[path] = p
	}
}

// String returns a string property (dotted, escaped path).
func (ev *Event) String(path string) (string, bool) {
	p, ok := ev.props[path]
	return p.str, ok && p.isStr
}

// canonicalScalar encodes a decoded JSON scalar; "" for objects, arrays
// and numbers that are not integers.
func canonicalScalar(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(x)
	case string:
		b, _ := json.Marshal(x)
		return string(b)
	case json.Number:
		n, err := strconv.ParseInt(string(x), 10, 64)
		if err != nil {
			return ""
		}
		return strconv.FormatInt(n, 10)
	}
	return ""
}

// escapeKey escapes one property name for a dot-separated path.
func escapeKey(k string) string {
	if !strings.ContainsAny(k, `.\`) {
		return k
	}
	return strings.NewReplacer(`\`, `\\`, `.`, `\.`).Replace(k)
}

// normalizePath rewrites a condition key into the flattened form: split on
// unescaped dots, where a backslash escapes a dot or a backslash and any
// other backslash is kept as it is (appendices, dot-separated property paths).
func normalizePath(key string) string {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur.WriteByte(key[i+1])
			i++
		case c == '.':
			parts = append(parts, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	parts = append(parts, cur.String())
	for i, p := range parts {
		parts[i] = escapeKey(p)
	}
	return strings.Join(parts, ".")
}

// RoomContext is what conditions need to know about the room and recipient. The
// evaluator calls it only for rules that ask, so implementations may
// compute lazily.
type RoomContext interface {
	// MemberCount is the number of joined members.
	MemberCount() int
	// DisplayName is the recipient's display name in the room ("" if none).
	DisplayName() string
	// SenderCanNotify reports whether the sender's power level reaches
	// notifications[key] of the room's power levels.
	SenderCanNotify(key string) bool
	// ThreadSubscribed reports whether the recipient is subscribed to the
	// thread with this root (MSC4306).
	ThreadSubscribed(threadID string) bool
}

// ThreadSubscriptionCondition is MSC4306's condition kind (unstable name):
// the event is in a thread, and the recipient is (subscribed: true) or is
// not (false) subscribed to it.
const ThreadSubscriptionCondition = "io.element.msc4306.thread_subscription"

// Result is the outcome of evaluation for one recipient.
type Result struct {
	RuleID    string
	Actions   []Action
	Notify    bool
	Highlight bool
}

// Compiled is a user's ruleset ready to evaluate. It is immutable and safe
// for concurrent use.
type Compiled struct {
	rules []compiledRule
}

type compiledRule struct {
	id      string
	actions []Action
	conds   []compiledCond
	notify  bool
	hl      bool
	// legacyMention: a legacy body-matching mention rule, skipped for
	// events with m.mentions (see LegacyMentionRule).
	legacyMention bool
}

type condKind int

const (
	condNever condKind = iota
	condEventMatch
	condPropertyIs
	condPropertyContains
	condDisplayName
	condMemberCount
	condSenderPermission
	condThreadSub
)

type compiledCond struct {
	kind  condKind
	path  string
	glob  *pattern
	value string // canonical JSON of event_property_is/contains
	op    string // room_member_count
	n     int
	key   string // sender_notification_permission
	sub   bool   // thread_subscription
}

// Compile prepares a rendered ruleset. Disabled rules are left out;
// conditions the server does not understand make their rule never match,
// as the spec requires.
func Compile(rs Ruleset) *Compiled {
	c := &Compiled{}
	for _, k := range Kinds {
		for _, r := range rs.Rules(k) {
			if !r.Enabled {
				continue
			}
			cr := compiledRule{id: r.RuleID, actions: r.Actions, legacyMention: r.Default && LegacyMentionRule(r.RuleID)}
			for _, a := range r.Actions {
				switch {
				case a.Name == "notify":
					cr.notify = true
				case a.Name == "set_tweak" && a.Tweak == "highlight":
					cr.hl = a.Value == nil || string(a.Value) == "true"
				}
			}
			switch k {
			case Override, PostContent, Underride:
				for _, cond := range r.Conditions {
					cr.conds = append(cr.conds, compileCond(cond))
				}
			case Content:
				if r.Pattern == nil {
					continue
				}
				cr.conds = []compiledCond{{kind: condEventMatch, path: "content.body", glob: compileGlob(*r.Pattern, true)}}
			case Room:
				cr.conds = []compiledCond{{kind: condEventMatch, path: "room_id", glob: literalGlob(r.RuleID)}}
			case Sender:
				cr.conds = []compiledCond{{kind: condEventMatch, path: "sender", glob: literalGlob(r.RuleID)}}
			}
			c.rules = append(c.rules, cr)
		}
	}
	return c
}

func compileCond(c Condition) compiledCond {
	switch c.Kind {
	case "event_match":
		if c.Pattern == nil || c.Key == "" {
			return compiledCond{kind: condNever}
		}
		path := normalizePath(c.Key)
		return compiledCond{kind: condEventMatch, path: path, glob: compileGlob(*c.Pattern, path == "content.body")}
	case "event_property_is", "event_property_contains":
		if c.Key == "" || c.Value == nil {
			return compiledCond{kind: condNever}
		}
		dec := json.NewDecoder(bytes.NewReader(c.Value))
		dec.UseNumber()
		var v any
		if dec.Decode(&v) != nil {
			return compiledCond{kind: condNever}
		}
		canon := canonicalScalar(v)
		if canon == "" {
			return compiledCond{kind: condNever}
		}
		kind := condPropertyIs
		if c.Kind == "event_property_contains" {
			kind = condPropertyContains
		}
		return compiledCond{kind: kind, path: normalizePath(c.Key), value: canon}
	case "contains_display_name":
		return compiledCond{kind: condDisplayName}
	case "room_member_count":
		op, n, ok := parseMemberCount(c.Is)
		if !ok {
			return compiledCond{kind: condNever}
		}
		return compiledCond{kind: condMemberCount, op: op, n: n}
	case "sender_notification_permission":
		if c.Key == "" {
			return compiledCond{kind: condNever}
		}
		return compiledCond{kind: condSenderPermission, key: c.Key}
	case ThreadSubscriptionCondition:
		if c.Subscribed == nil {
			return compiledCond{kind: condNever}
		}
		return compiledCond{kind: condThreadSub, sub: *c.Subscribed}
	}
	return compiledCond{kind: condNever}
}

func parseMemberCount(is string) (string, int, bool) {
	op := "=="
	for _, p := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, p) {
			op, is = p, is[len(p):]
			break
		}
	}
	n, err := strconv.Atoi(is)
	return op, n, err == nil && n >= 0
}

// Evaluate runs the rules against ev and returns the first matching rule's
// outcome; Notify is false when no rule matches or the matching rule does
// not notify.
func (c *Compiled) Evaluate(ev *Event, room RoomContext) Result {
	for i := range c.rules {
		r := &c.rules[i]
		if r.legacyMention && ev.hasMentions {
			continue
		}
		if r.matches(ev, room) {
			return Result{RuleID: r.id, Actions: r.actions, Notify: r.notify, Highlight: r.notify && r.hl}
		}
	}
	return Result{}
}

func (r *compiledRule) matches(ev *Event, room RoomContext) bool {
	for i := range r.conds {
		if !r.conds[i].matches(ev, room) {
			return false
		}
	}
	return true
}

func (c *compiledCond) matches(ev *Event, room RoomContext) bool {
	switch c.kind {
	case condEventMatch:
		s, ok := ev.String(c.path)
		return ok && c.glob.match(s)
	case condPropertyIs:
		p, ok := ev.props[c.path]
		return ok && !p.isArr && p.scalar == c.value
	case condPropertyContains:
		p, ok := ev.props[c.path]
		if !ok || !p.isArr {
			return false
		}
		for _, v := range p.array {
			if v == c.value {
				return true
			}
		}
		return false
	case condDisplayName:
		body, ok := ev.String("content.body")
		name := room.DisplayName()
		if !ok || name == "" {
			return false
		}
		return containsWord(body, name)
	case condMemberCount:
		n := room.MemberCount()
		switch c.op {
		case "<":
			return n < c.n
		case ">":
			return n > c.n
		case "<=":
			return n <= c.n
		case ">=":
			return n >= c.n
		}
		return n == c.n
	case condSenderPermission:
		return room.SenderCanNotify(c.key)
	case condThreadSub:
		if rel, _ := ev.String(`content.m\.relates_to.rel_type`); rel != "m.thread" {
			return false
		}
		root, ok := ev.String(`content.m\.relates_to.event_id`)
		return ok && root != "" && room.ThreadSubscribed(root) == c.sub
	}
	return false
}

// containsWord reports whether body contains word, case-insensitively,
// with no letter, digit or underscore right before or after it (the
// word-boundary rule of content.body matching), without building a
// regular expression per recipient.
func containsWord(body, word string) bool {
	body, word = strings.ToLower(body), strings.ToLower(word)
	isWordByte := func(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	for from := 0; from <= len(body)-len(word); {
		i := strings.Index(body[from:], word)
		if i < 0 {
			return false
		}
		start, end := from+i, from+i+len(word)
		if (start == 0 || !isWordByte(body[start-1])) && (end == len(body) || !isWordByte(body[end])) {
			return true
		}
		from = start + 1
	}
	return false
}

// pattern is a compiled glob-style pattern, matched case-insensitively
// (package glob). Only content.body's word matching needs a regular
// expression; whole-string patterns match without one.
type pattern struct {
	glob  string
	words *regexp.Regexp
}

func literalGlob(s string) *pattern { return &pattern{glob: s} }

// compileGlob compiles p; words makes it match any substring that starts
// and ends at a word boundary (the content.body rule).
func compileGlob(p string, words bool) *pattern {
	if !words {
		return &pattern{glob: p}
	}
	// Word characters are ASCII letters, digits and _, compared with case
	// folding off: under (?i), [a-z] also holds the Kelvin sign and the
	// long s, which would count as letters.
	re, err := regexp.Compile(`(?is)(?:^|(?-i:[^A-Za-z0-9_]))` + glob.Regexp(p) + `(?:(?-i:[^A-Za-z0-9_])|$)`)
	if err != nil {
		re = regexp.MustCompile(`\A\z.`) // never matches
	}
	return &pattern{words: re}
}

func (g *pattern) match(s string) bool {
	if g.words != nil {
		return g.words.MatchString(s)
	}
	return glob.MatchFold(g.glob, s)
}
