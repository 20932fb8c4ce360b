package glob

import (
	"regexp"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s     string
		want, wantFold bool
	}{
		{"", "", true, true},
		{"", "a", false, false},
		{"*", "", true, true},
		{"*", "anything at all", true, true},
		{"?", "", false, false},
		{"?", "é", true, true}, // one character, two bytes
		{"a?c", "abc", true, true},
		{"a?c", "ac", false, false},
		{"*.example.org", "matrix.example.org", true, true},
		{"*.example.org", "example.org", false, false},
		{"*.EXAMPLE.org", "matrix.example.org", false, true},
		{"evil.*", "evil.com", true, true},
		{"a*b*c", "aXXbYYc", true, true},
		{"a*b*c", "aXXbYY", false, false},
		{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false, false},
		{"**", "x", true, true},
		{"ÄB*", "äbc", false, true},
		{"[a]", "a", false, false}, // no character classes: brackets are literal
		{"[a]", "[a]", true, true},
		{"a.c", "abc", false, false}, // . is literal
	} {
		if got := Match(c.pattern, c.s); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
		if got := MatchFold(c.pattern, c.s); got != c.wantFold {
			t.Errorf("MatchFold(%q, %q) = %v, want %v", c.pattern, c.s, got, c.wantFold)
		}
	}
}

// The matcher agrees with the regular expression Regexp makes, which is
// the spec's rule written the obvious way.
func TestMatchAgreesWithRegexp(t *testing.T) {
	patterns := []string{"*", "?", "a*", "*a", "a?b*", "*.org", "x*y?z", "??*", "*?*?"}
	subjects := []string{"", "a", "ab", "ba", "axbyz", "matrix.org", "xyz", "xqyqz", "ABC", "aé"}
	for _, p := range patterns {
		re := regexp.MustCompile("(?s)^" + Regexp(p) + "$")
		fre := regexp.MustCompile("(?is)^" + Regexp(p) + "$")
		for _, s := range subjects {
			if got, want := Match(p, s), re.MatchString(s); got != want {
				t.Errorf("Match(%q, %q) = %v, regexp says %v", p, s, got, want)
			}
			if got, want := MatchFold(p, s), fre.MatchString(s); got != want {
				t.Errorf("MatchFold(%q, %q) = %v, regexp says %v", p, s, got, want)
			}
		}
	}
}

func BenchmarkMatchFoldServerACL(b *testing.B) {
	for range b.N {
		MatchFold("*.evil.example.org", "matrix.good.example.org")
	}
}
