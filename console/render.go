package console

import (
	"embed"
	"html/template"
	"net/http"
	"time"
)

//go:embed templates/*.html
var templateFiles embed.FS

// page is what every template gets.
type page struct {
	Title, Flash, Error, Query string
	CSRF                       string // the session's (or the sign-in form's) token
	Admin                      string // the signed-in admin; empty on public pages
	Data                       any
}

var funcs = template.FuncMap{
	"ts": func(v any) string {
		var ms int64
		switch n := v.(type) {
		case float64:
			ms = int64(n)
		case int64:
			ms = n
		default:
			return ""
		}
		if ms <= 0 {
			return ""
		}
		return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC")
	},
	"prefix": func() string { return Prefix },
}

// pages are parsed once: the layout with each page's "content".
var pages = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"login", "error", "dashboard", "users", "user", "rooms", "room", "media", "reports", "tokens", "federation", "notices", "tasks"} {
		out[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html"))
	}
	return out
}()

func (c *Console) render(w http.ResponseWriter, status int, name string, s *session, p page) {
	if s != nil {
		p.Admin, p.CSRF = s.caller.UserID, s.csrf
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := pages[name].Execute(w, p); err != nil {
		c.log.Error("console: rendering", "page", name, "err", err)
	}
}
