package oauth

import (
	"bytes"
	"crypto/subtle"
	"database/sql"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// The HTML side: every page gets the same security headers, every form
// (POST) a CSRF check, and a signed-in browser is a session cookie whose
// value is stored hashed.

const (
	sessionCookie = "hearth_session"
	csrfCookie    = "hearth_csrf"
	cookiePath    = "/_hearth/"
)

// pageHandler renders a page or redirects; an error becomes the error page.
type pageHandler func(w http.ResponseWriter, r *http.Request) error

// pageError is an error shown to the user with its status.
type pageError struct {
	status int
	msg    msg
}

func (e *pageError) Error() string { return e.msg.in("en") }

func pageErr(status int, format string, args ...any) error {
	return &pageError{status, say(format, args...)}
}

func badPage(format string, args ...any) error {
	return pageErr(http.StatusBadRequest, format, args...)
}

// pageHeaders: no framing (clickjacking), no inline script or style, no
// caching of pages that carry CSRF tokens, no referrer leaking codes to
// other sites. (Not no-referrer: then browsers send "Origin: null" with
// our own forms, and form refuses them.)
func pageHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self' https:; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

func (a *API) page(h pageHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pageHeaders(w)
		if err := h(w, r); err != nil {
			a.errorPage(w, r, err)
		}
	})
}

// form is page for a POST: the form must be url-encoded, come from our own
// origin when the browser says, and carry the CSRF cookie's token
// (double-submit: another site can neither read the cookie nor set it).
func (a *API) form(h pageHandler) http.Handler {
	return a.page(func(w http.ResponseWriter, r *http.Request) error {
		if err := r.ParseForm(); err != nil {
			return badPage("The form could not be read.")
		}
		if o := r.Header.Get("Origin"); o != "" && o != a.baseURL(r) {
			return pageErr(http.StatusForbidden, "This form was sent from another site.")
		}
		c, err := r.Cookie(csrfCookie)
		sent := r.PostForm.Get("csrf")
		if err != nil || len(c.Value) < 32 || subtle.ConstantTimeCompare([]byte(c.Value), []byte(sent)) != 1 {
			return pageErr(http.StatusForbidden, "The form has expired or was not sent from this site. Go back, reload the page and try again.")
		}
		return h(w, r)
	})
}

func (a *API) errorPage(w http.ResponseWriter, r *http.Request, err error) {
	var pe *pageError
	if !errors.As(err, &pe) {
		mxhttp.Logger(r).Error("OAuth page", "path", r.URL.Path, "err", err)
		pe = &pageError{http.StatusInternalServerError, say("Something went wrong on the server. Try again later.")}
	}
	a.render(w, r, pe.status, "error", map[string]any{"Message": pe.msg})
}

// done shows that an action succeeded.
func (a *API) done(w http.ResponseWriter, r *http.Request, format string, args ...any) {
	a.render(w, r, http.StatusOK, "done", map[string]any{"Message": say(format, args...)})
}

// render executes a page template in the browser's language, with the
// CSRF token in .CSRF, the language switch in .Languages, and its
// messages (msg values) translated.
func (a *API) render(w http.ResponseWriter, r *http.Request, status int, name string, data map[string]any) {
	data["CSRF"] = a.csrfToken(w, r)
	lang := a.pageLanguage(w, r)
	data["Languages"] = languageLinks(r, lang)
	for k, v := range data {
		if m, ok := v.(msg); ok {
			data[k] = m.in(lang)
		}
	}
	var buf bytes.Buffer
	if err := a.pages[lang].ExecuteTemplate(&buf, name, data); err != nil {
		mxhttp.Logger(r).Error("rendering OAuth page", "page", name, "err", err)
		http.Error(w, "Internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// csrfToken is the browser's CSRF token, set as a cookie when it has none.
func (a *API) csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) >= 32 {
		return c.Value
	}
	tok := accounts.NewToken("")
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: tok, Path: cookiePath, HttpOnly: true,
		Secure: a.secure(r), SameSite: http.SameSiteStrictMode})
	// Later cookies in this response are read by this request's own render.
	r.AddCookie(&http.Cookie{Name: csrfCookie, Value: tok})
	return tok
}

// sessionUser is the signed-in user of the browser, "" if none.
func (a *API) sessionUser(r *http.Request) (string, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return "", nil
	}
	userID, err := a.db.BrowserSessionUser(r.Context(), c.Value, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	return userID, err
}

// formUser is the signed-in user posting a form; without a session the
// form is refused.
func (a *API) formUser(r *http.Request) (string, error) {
	user, err := a.sessionUser(r)
	if err == nil && user == "" {
		err = pageErr(http.StatusForbidden, "You are not signed in. Reload the page to sign in.")
	}
	return user, err
}

// requireUser is the signed-in user, or "" after redirecting to sign in
// with a way back to this page.
func (a *API) requireUser(w http.ResponseWriter, r *http.Request) (string, error) {
	userID, err := a.sessionUser(r)
	if err != nil || userID != "" {
		return userID, err
	}
	http.Redirect(w, r, prefix+"/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
	return "", nil
}

// startSession signs the browser in as userID.
func (a *API) startSession(w http.ResponseWriter, r *http.Request, userID string) error {
	tok := accounts.NewToken("")
	now := time.Now()
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertBrowserSession(r.Context(), tx, tok, userID, now.UnixMilli(), now.Add(browserSessionLifetime).UnixMilli())
	})
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: cookiePath, HttpOnly: true,
		Secure: a.secure(r), SameSite: http.SameSiteLaxMode, MaxAge: int(browserSessionLifetime.Seconds())})
	return nil
}

// nextPath is where to go after signing in: only our own pages, so the
// parameter is no open redirect.
func nextPath(next string) string {
	if strings.HasPrefix(next, "/_hearth/") && !strings.ContainsAny(next, "\\\r\n") {
		return next
	}
	return accountPath
}

// POST /_hearth/account/logout signs the browser out.
func (a *API) browserLogout(w http.ResponseWriter, r *http.Request) error {
	if c, err := r.Cookie(sessionCookie); err == nil {
		if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
			return storage.DeleteBrowserSession(r.Context(), tx, c.Value)
		}); err != nil {
			return err
		}
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: cookiePath, MaxAge: -1, HttpOnly: true, Secure: a.secure(r)})
	http.Redirect(w, r, prefix+"/login", http.StatusSeeOther)
	return nil
}

func serveCSS(w http.ResponseWriter, r *http.Request) {
	b, err := pageFiles.ReadFile("pages/style.css")
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(b)
}
