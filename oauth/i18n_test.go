package oauth

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestTranslations: every text of the pages (T, TH, page titles) and every
// message of this package's Go code (badPage, pageErr, say, done, again)
// has a Korean translation with the same verbs, and no translation is left
// over.
func TestTranslations(t *testing.T) {
	texts := map[string]string{} // text -> where it was found
	tmpl, err := pageFiles.ReadFile("pages/pages.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\{\{TH? ("(?:[^"\\]|\\.)*")|dict "Title" ("(?:[^"\\]|\\.)*")`).FindAllStringSubmatch(string(tmpl), -1) {
		lit := m[1] + m[2]
		s, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("template text %s: %v", lit, err)
		}
		texts[s] = "pages.html"
	}
	goMsg := regexp.MustCompile(`\b(?:badPage|pageErr|say|done|again)\((?:w, r, |[^"()]*, )?("(?:[^"\\]|\\.)*")`)
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || strings.HasPrefix(f, "i18n") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range goMsg.FindAllStringSubmatch(string(src), -1) {
			s, err := strconv.Unquote(m[1])
			if err != nil {
				t.Fatalf("%s: %s: %v", f, m[1], err)
			}
			texts[s] = f
		}
	}
	if len(texts) < 80 {
		t.Fatalf("found only %d texts: the patterns no longer match the code", len(texts))
	}
	verbs := regexp.MustCompile(`%[a-z]`)
	for s, where := range texts {
		ko, ok := korean[s]
		if !ok {
			t.Errorf("%s: no Korean for %q", where, s)
			continue
		}
		if strings.Join(verbs.FindAllString(s, -1), "") != strings.Join(verbs.FindAllString(ko, -1), "") {
			t.Errorf("%q: the Korean %q has other verbs", s, ko)
		}
	}
	for s := range korean {
		if _, ok := texts[s]; !ok {
			t.Errorf("Korean for %q, which nothing shows", s)
		}
	}
}
