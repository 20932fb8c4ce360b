package clientapi

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/email"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Email addresses on accounts (client-server API, Adding Account
// Administrative Contact Information; Password management; the
// m.login.email.identity UIA stage). Hearth validates addresses itself,
// as the spec lets a homeserver do: requestToken mails a link to the
// address, the link's page validates the session, and the client then
// completes a UIA stage or /account/3pid/add with the session. No
// identity server is involved, so id_server is ignored.

// Purposes of a validation session: a session validated for one cannot be
// used for another.
const (
	purposeRegister = "register"
	purposeAdd      = "add"
	purposePassword = "password"
)

const (
	stageEmailIdentity = "m.login.email.identity"
	// threePIDTokenLifetime is how long the link in a mail works.
	threePIDTokenLifetime = time.Hour
	// threePIDSessionLifetime is how long a validated session may be used.
	threePIDSessionLifetime = 24 * time.Hour
	// emailValidatePath is the page the link in the mail opens.
	emailValidatePath = "/_hearth/client/email/validate"
	csrfCookie        = "hearth_csrf"
)

// clientSecretRE is the grammar of client_secret (Identity Service API,
// Email associations): [0-9a-zA-Z.=_-], 1 to 255 characters.
var clientSecretRE = regexp.MustCompile(`^[0-9a-zA-Z.=_-]{1,255}$`)

type emailTokenRequest struct {
	ClientSecret string `json:"client_secret"`
	Email        string `json:"email"`
	SendAttempt  *int64 `json:"send_attempt"`
	NextLink     string `json:"next_link"`
}

// POST /register/email/requestToken: the address must not be bound.
func (a *API) registerEmailToken(r *http.Request, _ accounts.Caller) (any, error) {
	if a.conf().Registration == config.RegistrationClosed {
		return nil, mxhttp.Forbidden("Registration is disabled on this server")
	}
	return a.requestEmailToken(r, purposeRegister)
}

// POST /account/3pid/email/requestToken: the address must not be bound.
func (a *API) addEmailToken(r *http.Request, _ accounts.Caller) (any, error) {
	return a.requestEmailToken(r, purposeAdd)
}

// POST /account/password/email/requestToken: the address must be bound.
func (a *API) passwordEmailToken(r *http.Request, _ accounts.Caller) (any, error) {
	return a.requestEmailToken(r, purposePassword)
}

// POST .../msisdn/requestToken: Hearth sends no text messages.
func (a *API) msisdnToken(r *http.Request, _ accounts.Caller) (any, error) {
	return nil, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_MEDIUM_NOT_SUPPORTED",
		Message: "This server does not validate phone numbers"}
}

func (a *API) requestEmailToken(r *http.Request, purpose string) (any, error) {
	ctx := r.Context()
	var req emailTokenRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if a.mail == nil {
		return nil, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_MEDIUM_NOT_SUPPORTED",
			Message: "This server does not send email (smtp_host is not configured)"}
	}
	if !clientSecretRE.MatchString(req.ClientSecret) {
		return nil, mxhttp.InvalidParam("client_secret must be 1 to 255 characters of [0-9a-zA-Z.=_-]")
	}
	if req.SendAttempt == nil {
		return nil, mxhttp.MissingParam("send_attempt is required")
	}
	address, err := parseEmail(req.Email)
	if err != nil {
		return nil, err
	}
	if req.NextLink != "" {
		if u, err := url.Parse(req.NextLink); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, mxhttp.InvalidParam("next_link must be an http or https URL")
		}
	}
	if err := a.limit(r, a.live().limits.loginIP, clientIP(r)); err != nil {
		return nil, err
	}
	owner, err := storage.UserOfThreePID(ctx, a.db.Read(), "email", address)
	switch {
	case err != nil && !errors.Is(err, storage.ErrNotFound):
		return nil, err
	case purpose == purposePassword && err != nil:
		return nil, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_NOT_FOUND",
			Message: "No account on this server has that email address"}
	case purpose != purposePassword && owner != "":
		return nil, errThreePIDInUse()
	}

	now := time.Now()
	sess, err := storage.ThreePIDSessionBySecret(ctx, a.db.Read(), req.ClientSecret, "email", address, purpose, now.UnixMilli())
	found := err == nil
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	// The spec: mail again only for a send_attempt above the last one
	// seen for this secret and address; a retry of the same request
	// gets the same session without a second mail.
	if found && *req.SendAttempt <= sess.SendAttempt {
		return map[string]string{"sid": sess.SessionID}, nil
	}
	// Each address gets mail at the per-user login rate, however many
	// client secrets a caller invents: no flooding of someone's inbox.
	if err := a.limit(r, a.live().limits.loginUser, "email:"+address); err != nil {
		return nil, err
	}
	token := randomHex(32)
	tokenExpires := now.Add(threePIDTokenLifetime).UnixMilli()
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if found {
			return storage.RenewThreePIDSessionToken(ctx, tx, sess.SessionID, *req.SendAttempt, token, tokenExpires, req.NextLink)
		}
		sess = storage.ThreePIDSession{
			SessionID: randomHex(16), Medium: "email", Address: address, Purpose: purpose, SendAttempt: *req.SendAttempt,
			TokenExpiresTS: tokenExpires, NextLink: req.NextLink, ExpiresTS: now.Add(threePIDSessionLifetime).UnixMilli(),
		}
		return storage.InsertThreePIDSession(ctx, tx, sess, req.ClientSecret, token, now.UnixMilli())
	})
	if errors.Is(err, storage.ErrConflict) {
		return nil, mxhttp.Unknown("Another request for this address and client secret is in progress; retry")
	}
	if err != nil {
		return nil, err
	}
	// The session is committed before the mail goes out: a mail whose
	// link finds no session would be worse than a session never mailed,
	// which a retry with a higher send_attempt fixes.
	if err := a.mail.Send(ctx, a.validationMail(address, purpose, sess.SessionID, req.ClientSecret, token)); err != nil {
		a.log.Error("sending validation mail", "err", err, "purpose", purpose)
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN",
			Message: "The server could not send the email; try again later"}
	}
	return map[string]string{"sid": sess.SessionID}, nil
}

// errThreePIDInUse is the spec's answer for an address another account has.
func errThreePIDInUse() error {
	return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_IN_USE",
		Message: "That email address is already in use on this server"}
}

// parseEmail checks an address (a bare addr-spec, at most 254 bytes) and
// returns it normalised.
func parseEmail(s string) (string, error) {
	if s == "" {
		return "", mxhttp.MissingParam("email is required")
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != strings.TrimSpace(s) || len(s) > 254 ||
		strings.ContainsAny(s, "\r\n") {
		return "", mxhttp.InvalidParam("%q is not an email address", s)
	}
	return accounts.NormalizeEmail(addr.Address), nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// validationMail is the mail with the link that validates a session.
func (a *API) validationMail(address, purpose, sid, clientSecret, token string) email.Message {
	q := url.Values{"sid": {sid}, "client_secret": {clientSecret}, "token": {token}}
	link := strings.TrimSuffix(a.conf().WellKnownClient, "/") + emailValidatePath + "?" + q.Encode()
	server := a.conf().ServerName
	var subject, what string
	switch purpose {
	case purposeRegister:
		subject, what = "Confirm your email address for "+server, "create an account on "+server+" with this email address"
	case purposeAdd:
		subject, what = "Confirm your email address for "+server, "add this email address to an account on "+server
	default:
		subject, what = "Reset your password on "+server, "reset the password of the account on "+server+" that has this email address"
	}
	text := fmt.Sprintf("Someone, hopefully you, asked to %s.\n\nTo confirm, open this link:\n\n%s\n\n"+
		"The link works for one hour. If this was not you, ignore this mail: nothing changes without the link.\n",
		what, link)
	return email.Message{To: address, Subject: subject, Text: text}
}

// GET /account/3pid: the user's bound addresses.
func (a *API) threePIDs(r *http.Request, c accounts.Caller) (any, error) {
	list, err := storage.ThreePIDsOfUser(r.Context(), a.db.Read(), c.UserID)
	if err != nil {
		return nil, err
	}
	out := []map[string]any{}
	for _, t := range list {
		out = append(out, map[string]any{"medium": t.Medium, "address": t.Address,
			"validated_at": t.ValidatedTS, "added_at": t.AddedTS})
	}
	return map[string]any{"threepids": out}, nil
}

// POST /account/3pid/add (UIA): binds the address of a validated session.
func (a *API) addThreePID(r *http.Request, c accounts.Caller) (any, error) {
	ctx := r.Context()
	var req struct {
		Auth         json.RawMessage `json:"auth"`
		ClientSecret string          `json:"client_secret"`
		SID          string          `json:"sid"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if c.IsGuest {
		return nil, mxhttp.GuestAccess("Guests cannot add email addresses")
	}
	if req.ClientSecret == "" || req.SID == "" {
		return nil, mxhttp.MissingParam("client_secret and sid are required")
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /account/3pid/add", c.UserID), req.Auth)
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		sess, err := storage.ThreePIDSessionByID(ctx, tx, req.SID, req.ClientSecret, now)
		if errors.Is(err, storage.ErrNotFound) || err == nil && sess.Purpose != purposeAdd {
			return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_AUTH_FAILED",
				Message: "No such validation session: request a new token"}
		}
		if err != nil {
			return err
		}
		if sess.ValidatedTS == 0 {
			return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_AUTH_FAILED",
				Message: "The email address has not been validated yet: open the link in the mail first"}
		}
		if err := passed.consume(ctx, tx); err != nil {
			return err
		}
		err = storage.InsertThreePID(ctx, tx, storage.ThreePID{Medium: sess.Medium, Address: sess.Address,
			UserID: c.UserID, ValidatedTS: sess.ValidatedTS, AddedTS: now})
		if errors.Is(err, storage.ErrConflict) {
			return errThreePIDInUse()
		}
		if err != nil {
			return err
		}
		return storage.DeleteThreePIDSession(ctx, tx, sess.SessionID)
	})
	return writeEmptyOrError(r, err)
}

type threePIDRef struct {
	Medium  string `json:"medium"`
	Address string `json:"address"`
}

func readThreePIDRef(r *http.Request) (threePIDRef, error) {
	var req threePIDRef
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return req, err
	}
	if req.Medium == "" || req.Address == "" {
		return req, mxhttp.MissingParam("medium and address are required")
	}
	if req.Medium != "email" && req.Medium != "msisdn" {
		return req, mxhttp.InvalidParam("medium must be email or msisdn")
	}
	if req.Medium == "email" {
		req.Address = accounts.NormalizeEmail(req.Address)
	}
	return req, nil
}

// POST /account/3pid/delete. There is no identity server to unbind from,
// so the result is no-support as the spec says for that case.
func (a *API) deleteThreePID(r *http.Request, c accounts.Caller) (any, error) {
	req, err := readThreePIDRef(r)
	if err != nil {
		return nil, err
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.DeleteThreePID(r.Context(), tx, c.UserID, req.Medium, req.Address)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("You have no such third-party identifier")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// POST /account/3pid/unbind: nothing is ever bound at an identity server.
func (a *API) unbindThreePID(r *http.Request, _ accounts.Caller) (any, error) {
	if _, err := readThreePIDRef(r); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "no-support"}, nil
}

// emailStage checks an m.login.email.identity attempt: the session must
// be validated, live and of the purpose the request needs. It returns the
// session to attach to the UIA session.
func (a *API) emailStage(ctx context.Context, req uiaRequirement, raw json.RawMessage) (storage.ThreePIDSession, error) {
	type creds struct {
		SID          string `json:"sid"`
		ClientSecret string `json:"client_secret"`
	}
	var d struct {
		Creds    *creds `json:"threepid_creds"`
		OldCreds *creds `json:"threepidCreds"` // the r0.4 spelling
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return storage.ThreePIDSession{}, mxhttp.BadJSON("Malformed %s auth: %v", stageEmailIdentity, err)
	}
	var c creds
	if d.Creds != nil {
		c = *d.Creds
	} else if d.OldCreds != nil {
		c = *d.OldCreds
	}
	if c.SID == "" || c.ClientSecret == "" {
		return storage.ThreePIDSession{}, mxhttp.MissingParam("threepid_creds with sid and client_secret is required")
	}
	unauthorized := func(msg string) error {
		return &mxhttp.Error{Status: http.StatusUnauthorized, ErrCode: "M_UNAUTHORIZED", Message: msg}
	}
	sess, err := storage.ThreePIDSessionByID(ctx, a.db.Read(), c.SID, c.ClientSecret, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) || err == nil && sess.Purpose != req.emailPurpose {
		return sess, unauthorized("No such validation session: request a new token")
	}
	if err != nil {
		return sess, err
	}
	if sess.ValidatedTS == 0 {
		return sess, unauthorized("The email address has not been validated yet: open the link in the mail first")
	}
	return sess, nil
}

// resetPassword is POST /account/password without an access token: the
// forgotten-password flow, authorised by a validated email address
// (client-server API, Password management). Every device of the account
// is logged out unless logout_devices is false.
func (a *API) resetPassword(r *http.Request) (any, error) {
	ctx := r.Context()
	var req struct {
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	if a.mail == nil {
		return nil, mxhttp.MissingToken("Missing access token (this server sends no email, so a password cannot be reset by email)")
	}
	passed, err := a.userInteractiveAuth(r, uiaRequirement{action: "POST /account/password (email)",
		flows: []uiaFlow{{Stages: []string{stageEmailIdentity}}}, emailPurpose: purposePassword}, req.Auth)
	if err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, mxhttp.MissingParam("new_password is required")
	}
	if len(req.NewPassword) > 72 {
		return nil, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported")
	}
	hash, err := a.accounts.Passwords.Hash(ctx, req.NewPassword)
	if err != nil {
		return nil, err
	}
	var userID string
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		sess, err := storage.ThreePIDSessionOfUIA(ctx, tx, passed.session)
		if err != nil {
			return err
		}
		if err := passed.consume(ctx, tx); err != nil {
			return err
		}
		userID, err = storage.UserOfThreePID(ctx, tx, sess.Medium, sess.Address)
		if errors.Is(err, storage.ErrNotFound) {
			return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_THREEPID_NOT_FOUND",
				Message: "No account on this server has that email address any more"}
		}
		if err != nil {
			return err
		}
		if err := storage.SetPasswordHash(ctx, tx, userID, hash); err != nil {
			return err
		}
		if err := storage.DeleteThreePIDSession(ctx, tx, sess.SessionID); err != nil {
			return err
		}
		if req.LogoutDevices == nil || *req.LogoutDevices {
			return a.accounts.DeleteOtherDevices(ctx, tx, userID, "")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	a.log.Info("password reset by email", "user", userID)
	return map[string]any{}, nil
}

// The page the link in the mail opens. GET shows a button, POST
// validates: mail scanners that fetch every link must not validate on
// the user's behalf, and the form carries a CSRF token bound to a cookie.

var emailPage = template.Must(template.New("email").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;line-height:1.5}
button{font-size:1rem;padding:.6rem 1.2rem}</style></head>
<body><h1>{{.Title}}</h1><p>{{.Text}}</p>
{{if .Form}}<form method="post" action="{{.Action}}">
<input type="hidden" name="sid" value="{{.SID}}"><input type="hidden" name="client_secret" value="{{.ClientSecret}}">
<input type="hidden" name="token" value="{{.Token}}"><input type="hidden" name="csrf" value="{{.CSRF}}">
<button type="submit">Confirm</button></form>{{end}}
</body></html>
`))

type emailPageData struct {
	Title, Text              string
	Form                     bool
	Action                   string
	SID, ClientSecret, Token string
	CSRF                     string
}

func writeEmailPage(w http.ResponseWriter, status int, d emailPageData) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer") // the URL holds the token
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_ = emailPage.Execute(w, d)
}

// GET /_hearth/client/email/validate
func (a *API) emailValidatePage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("sid") == "" || q.Get("client_secret") == "" || q.Get("token") == "" {
		writeEmailPage(w, http.StatusBadRequest, emailPageData{Title: "Invalid link",
			Text: "This link is incomplete. Open the whole link from the mail, or ask your app for a new mail."})
		return
	}
	csrf := randomHex(16)
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: csrf, Path: emailValidatePath, HttpOnly: true,
		Secure: r.TLS != nil || strings.HasPrefix(a.conf().WellKnownClient, "https:"), SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	writeEmailPage(w, http.StatusOK, emailPageData{Title: "Confirm your email address",
		Text: "Press Confirm to confirm that this email address is yours.", Form: true, Action: emailValidatePath,
		SID: q.Get("sid"), ClientSecret: q.Get("client_secret"), Token: q.Get("token"), CSRF: csrf})
}

// POST /_hearth/client/email/validate
func (a *API) emailValidateSubmit(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	if err := r.ParseForm(); err != nil {
		writeEmailPage(w, http.StatusBadRequest, emailPageData{Title: "Invalid request", Text: "The form could not be read."})
		return
	}
	cookie, err := r.Cookie(csrfCookie)
	if err != nil || cookie.Value == "" || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(r.PostFormValue("csrf"))) != 1 {
		writeEmailPage(w, http.StatusForbidden, emailPageData{Title: "Please try again",
			Text: "This form expired or was not sent from this page. Open the link from the mail again."})
		return
	}
	now := time.Now().UnixMilli()
	var sess storage.ThreePIDSession
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		var err error
		sess, err = storage.ValidateThreePIDSession(r.Context(), tx, r.PostFormValue("sid"),
			r.PostFormValue("client_secret"), r.PostFormValue("token"), now)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		writeEmailPage(w, http.StatusBadRequest, emailPageData{Title: "Link expired",
			Text: "This link is invalid or has expired. Ask your app to send a new mail."})
		return
	}
	if err != nil {
		a.log.Error("validating email session", "err", err)
		writeEmailPage(w, http.StatusServiceUnavailable, emailPageData{Title: "Please try again",
			Text: "The server could not record the confirmation. Try the link again in a minute."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: "", Path: emailValidatePath, MaxAge: -1})
	if sess.NextLink != "" {
		http.Redirect(w, r, sess.NextLink, http.StatusFound)
		return
	}
	writeEmailPage(w, http.StatusOK, emailPageData{Title: "Email address confirmed",
		Text: "Your email address is confirmed. Go back to your app to continue."})
}
