package pushrules

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode"
)

// FuzzGlob: compiled globs (a regular expression, or EqualFold for
// patterns without wildcards) agree with a plain backtracking matcher of
// the spec's glob rules: * any run of characters, ? exactly one, case
// ignored; in content.body mode, any substring that starts and ends at a
// word boundary (word characters being ASCII letters, digits and _).
func FuzzGlob(f *testing.F) {
	for _, c := range [][2]string{
		{"cake*lie", "The cake is a lie"}, {"cake*lie", "cakeislie"}, {"lunch", "Lunch time!"}, {"@room", "hey @room"},
		{"bob", "bobsleigh"}, {"b?b", "BOB"}, {"*", ""}, {"", ""}, {"m.room.*", "m.room.message"}, {"?", "é"},
		{"a*b*c", "aXbYbZc"}, {"[x]", "[x]"}, {"(.*)", "(ab)"}, {"k", "\u212a"}, {"s", "\u017f"}, {"x?", "x\xff"},
		{"ß", "SS"}, {"*.example.org", "A.EXAMPLE.ORG"},
	} {
		f.Add(c[0], c[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return // the word reference tries every substring
		}
		if got, want := compileGlob(pattern, false).match(s), refGlob([]rune(pattern), []rune(s)); got != want {
			t.Fatalf("glob %q on %q: got %v, reference %v", pattern, s, got, want)
		}
		if got, want := compileGlob(pattern, true).match(s), refWords(pattern, s); got != want {
			t.Fatalf("word glob %q on %q: got %v, reference %v", pattern, s, got, want)
		}
		if !strings.ContainsAny(pattern, "*?") && !compileGlob(pattern, false).match(pattern) {
			t.Fatalf("literal %q does not match itself", pattern)
		}
	})
}

// sameFold reports whether a and b are equal under Unicode simple case
// folding, as (?i) and strings.EqualFold compare.
func sameFold(a, b rune) bool {
	if a == b {
		return true
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// refGlob is the spec's rule read literally: a pattern prefix matches the
// string prefixes it can reach, * reaching any later position. It walks
// the pattern once over the set of reachable positions of s: O(len(p) *
// len(s)^2) at worst, which the fuzzer's bounds keep small (a memo-less
// recursion was exponential in runs of stars and hung a 10-minute run).
func refGlob(p, s []rune) bool { return refReach(p, s)[len(s)] }

// refReach reports, for each j, whether all of p matches s[:j].
func refReach(p, s []rune) []bool {
	reach := make([]bool, len(s)+1)
	reach[0] = true
	for _, c := range p {
		next := make([]bool, len(s)+1)
		for j, ok := range reach {
			if !ok {
				continue
			}
			switch {
			case c == '*':
				for k := j; k <= len(s); k++ {
					next[k] = true
				}
			case j < len(s) && (c == '?' || sameFold(c, s[j])):
				next[j+1] = true
			}
		}
		reach = next
	}
	return reach
}

func isWordRune(r rune) bool {
	return r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// refWords: some substring of s that starts and ends at a word boundary
// matches the whole pattern.
func refWords(pattern, s string) bool {
	p, rs := []rune(pattern), []rune(s)
	for i := 0; i <= len(rs); i++ {
		if i > 0 && isWordRune(rs[i-1]) {
			continue
		}
		reach := refReach(p, rs[i:])
		for j := i; j <= len(rs); j++ {
			if j < len(rs) && isWordRune(rs[j]) {
				continue
			}
			if reach[j-i] {
				return true
			}
		}
	}
	return false
}

// FuzzEventMatch: a condition's dotted key finds, in the flattened event,
// exactly the string the spec's reading finds by walking the event JSON
// (split on unescaped dots, \. and \\ escaping); escaping a property name
// and normalising the path gives the path back; event_match on that path
// agrees with the reference glob; event_property_is agrees with comparing
// decoded scalars.
func FuzzEventMatch(f *testing.F) {
	ev := `{"type":"m.room.message","sender":"@alice:example.org","room_id":"!r:example.org","state_key":"",` +
		`"content":{"body":"Hello Bob","msgtype":"m.text","m.relates_to":{"rel_type":"m.thread"},"a.b":{"c\\d":"x"},` +
		`"m.mentions":{"user_ids":["@bob:example.org"],"room":true},"n":5,"null":null}}`
	for _, c := range [][3]string{
		{ev, "content.body", "hello*"}, {ev, "content.m\\.relates_to.rel_type", "m.thread"}, {ev, "content.a\\.b.c\\\\d", "x"},
		{ev, "content.m\\.mentions.room", "true"}, {ev, "type", "m.room.*"}, {ev, "state_key", ""}, {ev, "content.n", "5"},
		{ev, `content.a\b`, "*"}, {`{"content":{"":{"":"v"}}}`, "content..", "v"}, {`{"x\\\\":{"y":"z"}}`, `x\\\\.y`, "z"},
		{`{"signatures":{"a":"b"}}`, "signatures.a", "b"}, {`[1]`, "a", "b"}, {`null`, "a", "b"},
	} {
		f.Add([]byte(c[0]), c[1], c[2])
	}
	f.Fuzz(func(t *testing.T, eventJSON []byte, key, pattern string) {
		if len(pattern) > 64 {
			return
		}
		ev, err := NewEvent(eventJSON)
		if err != nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(eventJSON))
		dec.UseNumber()
		var top map[string]any
		if dec.Decode(&top) != nil {
			t.Fatalf("NewEvent accepted %q, which does not decode", eventJSON)
		}
		// Property names round-trip through escaping and normalisation.
		parts := splitKey(key)
		esc := make([]string, len(parts))
		for i, p := range parts {
			esc[i] = escapeKey(p)
		}
		if joined := strings.Join(esc, "."); normalizePath(joined) != joined {
			t.Fatalf("escaped path %q normalises to %q", joined, normalizePath(joined))
		}
		want, wantOK := refLookup(top, parts)
		got, gotOK := ev.String(normalizePath(key))
		if gotOK != wantOK || got != want {
			t.Fatalf("key %q in %s: got %q %v, reference %q %v", key, eventJSON, got, gotOK, want, wantOK)
		}
		p := pattern
		c := Compile(Ruleset{Override: []Rule{{RuleID: "fuzz", Enabled: true, Actions: []Action{Notify},
			Conditions: []Condition{{Kind: "event_match", Key: key, Pattern: &p}}}}})
		matched := c.Evaluate(ev, nil).RuleID == "fuzz"
		refMatched := key != "" && wantOK && (normalizePath(key) == "content.body" && refWords(pattern, want) ||
			normalizePath(key) != "content.body" && refGlob([]rune(pattern), []rune(want)))
		if matched != refMatched {
			t.Fatalf("event_match %q %q on %s: got %v, reference %v", key, pattern, eventJSON, matched, refMatched)
		}
		// event_property_is with the value found there, when it is a scalar.
		if v, ok := refValue(top, parts); ok && key != "" {
			if raw, err := json.Marshal(v); err == nil && canonicalScalar(v) != "" {
				c := Compile(Ruleset{Override: []Rule{{RuleID: "is", Enabled: true, Actions: []Action{Notify},
					Conditions: []Condition{{Kind: "event_property_is", Key: key, Value: raw}}}}})
				if c.Evaluate(ev, nil).RuleID != "is" {
					t.Fatalf("event_property_is %q = %s does not match %s", key, raw, eventJSON)
				}
			}
		}
	})
}

// splitKey is the spec's reading of a dotted key: split on dots not
// escaped by a backslash; \. and \\ stand for . and \, any other backslash
// for itself.
func splitKey(key string) []string {
	var parts []string
	var cur []byte
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key) && (key[i+1] == '.' || key[i+1] == '\\'):
			cur = append(cur, key[i+1])
			i++
		case c == '.':
			parts = append(parts, string(cur))
			cur = nil
		default:
			cur = append(cur, c)
		}
	}
	return append(parts, string(cur))
}

func refValue(top map[string]any, parts []string) (any, bool) {
	if skipTopLevel[parts[0]] {
		return nil, false
	}
	var v any = top
	for _, p := range parts {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	switch v.(type) {
	case map[string]any, []any:
		return nil, false
	}
	return v, true
}

func refLookup(top map[string]any, parts []string) (string, bool) {
	v, ok := refValue(top, parts)
	s, isStr := v.(string)
	return s, ok && isStr
}
