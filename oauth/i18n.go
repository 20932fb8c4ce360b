package oauth

import (
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// The pages speak English and Korean. The English text is the key: the
// templates write {{T "Sign in"}} (or TH when the arguments sit inside
// markup), the Go code its messages in English, and a language without a
// translation of a text shows the English.

// languages are the pages' languages, the first the default, with the
// name each goes by in the language switch.
var languages = []struct{ Tag, Name string }{{"en", "English"}, {"ko", "한국어"}}

const langCookie = "hearth_lang"

// catalogs holds each language's translations (i18n_ko.go).
var catalogs = map[string]map[string]string{"ko": korean}

// translate is format in lang, with args put in.
func translate(lang, format string, args ...any) string {
	if t, ok := catalogs[lang][format]; ok {
		format = t
	}
	if len(args) == 0 {
		return format
	}
	return fmt.Sprintf(format, args...)
}

// msg is a text for the user with its arguments, translated when shown.
type msg struct {
	format string
	args   []any
}

func say(format string, args ...any) msg { return msg{format, args} }

func (m msg) in(lang string) string { return translate(lang, m.format, m.args...) }

// pageFuncs are the template functions of one language.
func pageFuncs(lang string) template.FuncMap {
	return template.FuncMap{
		"dict": dict,
		"Lang": func() string { return lang },
		"T":    func(format string, args ...any) string { return translate(lang, format, args...) },
		// TH is T for a text whose arguments are markup-free values put
		// inside trusted markup: the arguments are escaped, the text is not.
		"TH": func(format string, args ...any) template.HTML {
			esc := make([]any, len(args))
			for i, a := range args {
				esc[i] = template.HTMLEscapeString(fmt.Sprint(a))
			}
			return template.HTML(translate(lang, format, esc...))
		},
	}
}

func knownLanguage(tag string) bool {
	for _, l := range languages {
		if l.Tag == tag {
			return true
		}
	}
	return false
}

// pageLanguage is the language of the pages for this browser: the one it
// just chose (?lang=, remembered in a cookie), the one it chose before,
// or the first of Accept-Language the pages speak.
func (a *API) pageLanguage(w http.ResponseWriter, r *http.Request) string {
	if l := r.URL.Query().Get("lang"); knownLanguage(l) {
		http.SetCookie(w, &http.Cookie{Name: langCookie, Value: l, Path: cookiePath, HttpOnly: true,
			Secure: a.secure(r), SameSite: http.SameSiteLaxMode, MaxAge: 365 * 24 * 3600})
		return l
	}
	if c, err := r.Cookie(langCookie); err == nil && knownLanguage(c.Value) {
		return c.Value
	}
	for _, tag := range acceptLanguages(r) {
		base, _, _ := strings.Cut(strings.ToLower(tag), "-")
		if knownLanguage(base) {
			return base
		}
	}
	return languages[0].Tag
}

// languageLinks are the language switch of a page shown for a GET: the
// same page in each language. A page shown in answer to a form has none
// (its address is not one to open again).
func languageLinks(r *http.Request, current string) []map[string]any {
	if r.Method != http.MethodGet {
		return nil
	}
	var out []map[string]any
	for _, l := range languages {
		q := r.URL.Query()
		q.Set("lang", l.Tag)
		u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
		out = append(out, map[string]any{"Tag": l.Tag, "Name": l.Name, "URL": u.String(), "Current": l.Tag == current})
	}
	return out
}
