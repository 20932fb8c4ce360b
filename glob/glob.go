// Package glob is the spec's glob-style matching (appendices, Glob-style
// matching): * matches zero or more characters, ? exactly one, anything
// else itself. Server ACLs and push rules match case-insensitively,
// MSC4155 invite permission globs exactly.
package glob

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Match reports whether all of s matches pattern, case-sensitively.
func Match(pattern, s string) bool { return match(pattern, s, false) }

// MatchFold is Match ignoring case (Unicode simple folding).
func MatchFold(pattern, s string) bool { return match(pattern, s, true) }

// HasWildcards reports whether pattern has a * or ?: without one, Match
// is plain equality.
func HasWildcards(pattern string) bool { return strings.ContainsAny(pattern, "*?") }

// match walks pattern and s once, remembering the last * so that on a
// mismatch that * swallows one more character of s and matching resumes
// after it: linear in practice, O(len(pattern)·len(s)) at worst, with no
// allocation and no regular expression.
func match(pattern, s string, fold bool) bool {
	pi, si := 0, 0
	star, mark := -1, 0 // byte offset just after the last *, and where its run in s ends
	for si < len(s) {
		if pi < len(pattern) {
			pr, pn := utf8.DecodeRuneInString(pattern[pi:])
			sr, sn := utf8.DecodeRuneInString(s[si:])
			switch {
			case pr == '*':
				pi += pn
				star, mark = pi, si
				continue
			case pr == '?' || pr == sr || fold && equalFold(pr, sr):
				pi += pn
				si += sn
				continue
			}
		}
		if star < 0 {
			return false
		}
		// Let the last * swallow one more character of s and retry.
		_, n := utf8.DecodeRuneInString(s[mark:])
		mark += n
		pi, si = star, mark
	}
	for pi < len(pattern) && pattern[pi] == '*' {
		pi++
	}
	return pi == len(pattern)
}

func equalFold(a, b rune) bool {
	if a == b {
		return true
	}
	for f := unicode.SimpleFold(a); f != a; f = unicode.SimpleFold(f) {
		if f == b {
			return true
		}
	}
	return false
}

// Regexp is pattern as the body of a regular expression (no anchors, no
// flags), for the one match that is not of a whole string: push rules'
// content.body, where the glob may match any run of whole words.
func Regexp(pattern string) string {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	return b.String()
}
