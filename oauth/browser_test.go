package oauth_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// browser is an HTTP client that behaves like a user's browser on the
// server's pages: it keeps cookies, follows redirects within the server
// and stops at one that leaves it (the client's callback), and submits
// the forms it is shown with their hidden fields (the CSRF token).
type browser struct {
	t      *testing.T
	base   *url.URL
	client *http.Client
	// last is the last page: its URL, status, headers and forms.
	last page
	// acceptLanguage is sent with every request ("ko-KR, en" if empty).
	acceptLanguage string
}

type page struct {
	url    *url.URL
	status int
	header http.Header
	body   string
	forms  []form
	// left is the URL of a redirect out of the server, when one stopped us.
	left *url.URL
}

type form struct {
	action string
	fields url.Values // hidden and pre-filled inputs
	// buttons are the submit buttons' name=value pairs.
	buttons [][2]string
}

func newBrowser(t *testing.T, serverURL string) *browser {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := url.Parse(serverURL)
	b := &browser{t: t, base: base}
	b.client = &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if req.URL.Host != base.Host {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	return b
}

// get opens a URL.
func (b *browser) get(u string) page {
	b.t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	// Korean first unless the test says otherwise: the pages and the
	// client's metadata are shown in it.
	lang := b.acceptLanguage
	if lang == "" {
		lang = "ko-KR, en"
	}
	req.Header.Set("Accept-Language", lang)
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := page{url: resp.Request.URL, status: resp.StatusCode, header: resp.Header, body: string(body)}
	if loc := resp.Header.Get("Location"); resp.StatusCode/100 == 3 && loc != "" {
		p.left, _ = resp.Request.URL.Parse(loc)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		p.forms = parseForms(b.t, string(body))
	}
	b.last = p
	return p
}

// submit sends the page's form whose action is action, with its hidden
// fields, the given fields, and the submit button button (name=value, or
// "" for none), as a browser on the server's own origin does.
func (b *browser) submit(p page, action string, fields map[string]string, button string) page {
	b.t.Helper()
	return b.submitWhere(p, action, "", "", fields, button)
}

// submitWhere is submit of the form whose hidden field key has value
// (among several forms with one action, as the device list has).
func (b *browser) submitWhere(p page, action, key, value string, fields map[string]string, button string) page {
	b.t.Helper()
	var f *form
	for i := range p.forms {
		if p.forms[i].action == action && (key == "" || p.forms[i].fields.Get(key) == value) {
			f = &p.forms[i]
			break
		}
	}
	if f == nil {
		b.t.Fatalf("no form with action %s on %s (status %d): %s", action, p.url, p.status, p.body)
	}
	vals := url.Values{}
	for k, v := range f.fields {
		vals[k] = append([]string(nil), v...)
	}
	for k, v := range fields {
		vals.Set(k, v)
	}
	if button != "" {
		name, value, _ := strings.Cut(button, "=")
		found := false
		for _, bt := range f.buttons {
			found = found || bt[0] == name && bt[1] == value
		}
		if !found {
			b.t.Fatalf("form %s has no button %s", action, button)
		}
		vals.Set(name, value)
	}
	target, _ := p.url.Parse(action)
	req, err := http.NewRequest("POST", target.String(), strings.NewReader(vals.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.base.Scheme+"://"+b.base.Host)
	return b.do(req)
}

// postForm posts fields to action as a form of the server's own pages,
// with the CSRF cookie's token unless fields has one.
func (b *browser) postForm(action string, fields map[string]string) page {
	b.t.Helper()
	target, _ := b.base.Parse(action)
	vals := url.Values{}
	for _, c := range b.client.Jar.Cookies(target) {
		if c.Name == "hearth_csrf" {
			vals.Set("csrf", c.Value)
		}
	}
	for k, v := range fields {
		vals.Set(k, v)
	}
	req, err := http.NewRequest("POST", target.String(), strings.NewReader(vals.Encode()))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", b.base.Scheme+"://"+b.base.Host)
	return b.do(req)
}

func parseForms(t *testing.T, body string) []form {
	doc, err := html.Parse(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing page: %v", err)
	}
	var forms []form
	var walk func(n *html.Node, f *form)
	walk = func(n *html.Node, f *form) {
		if n.Type == html.ElementNode {
			a := map[string]string{}
			for _, at := range n.Attr {
				a[at.Key] = at.Val
			}
			switch n.Data {
			case "form":
				forms = append(forms, form{action: a["action"], fields: url.Values{}})
				f = &forms[len(forms)-1]
				for c := n.FirstChild; c != nil; c = c.NextSibling {
					walk(c, f)
				}
				return
			case "input":
				if f != nil && a["name"] != "" {
					f.fields.Set(a["name"], a["value"])
				}
			case "button":
				if f != nil && a["name"] != "" {
					f.buttons = append(f.buttons, [2]string{a["name"], a["value"]})
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, f)
		}
	}
	walk(doc, nil)
	return forms
}
