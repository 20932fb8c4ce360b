package oauth

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-chi/chi/v5"
	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Company SSO: Hearth as an OpenID Connect relying party of upstream
// providers (config sso_providers). A sign-in goes
//
//	/_hearth/oauth2/upstream/{idp}?next=...       (a button on the sign-in page)
//	  -> the provider (state, nonce, PKCE S256)
//	  -> /_hearth/oauth2/upstream/{idp}/callback  (code exchanged, ID token verified)
//	  -> a browser session, then next: the consent page of an OAuth
//	     authorization, the device code page, or sso-complete for a
//	     classic client's m.login.sso.
//
// The state is single use and bound to the browser by a cookie (login
// CSRF); the upstream identity is (issuer, sub), linked to one account in
// sso_links.

const (
	upstreamPath       = prefix + "/upstream/"
	ssoStateCookie     = "hearth_sso_state"
	ssoRequestLifetime = 10 * time.Minute
	// ssoLoginTokenLifetime bounds the m.login.token token handed to a
	// classic client (client-server API, SSO client login: "around five
	// seconds"; a phone switching apps needs a little more).
	ssoLoginTokenLifetime = 30 * time.Second
	upstreamHTTPTimeout   = 15 * time.Second
)

// upstreams caches each provider's discovery document, fetched on first
// use so that a provider being down does not stop Hearth from starting.
type upstreams struct {
	client *http.Client
	mu     sync.Mutex
	byID   map[string]*oidc.Provider
}

func newUpstreams() *upstreams {
	return &upstreams{client: &http.Client{Timeout: upstreamHTTPTimeout}, byID: map[string]*oidc.Provider{}}
}

func (u *upstreams) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, u.client)
}

func (u *upstreams) provider(ctx context.Context, sp config.SSOProvider) (*oidc.Provider, error) {
	u.mu.Lock()
	p := u.byID[sp.ID]
	u.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := oidc.NewProvider(u.ctx(ctx), sp.Issuer)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.byID[sp.ID] = p
	u.mu.Unlock()
	return p, nil
}

// ssoProvider is the configured provider of the request's {idp}, with its
// defaults filled in.
func (a *API) ssoProvider(id string) (config.SSOProvider, error) {
	sp, ok := a.conf().SSOProviders.Provider(id)
	if !ok {
		return sp, &pageError{http.StatusNotFound, say("This sign-in provider is not known on this server.")}
	}
	return sp.WithDefaults(), nil
}

// oauth2Config is the OAuth 2.0 client of a provider; the callback path
// is per provider, so a response cannot be mixed up with another
// provider's (RFC 9700, section 4.4).
func (a *API) oauth2Config(r *http.Request, sp config.SSOProvider, p *oidc.Provider) (*oauth2.Config, error) {
	secret, err := sp.Secret()
	if err != nil {
		return nil, err
	}
	ep := p.Endpoint()
	// client_secret_basic, the OpenID Connect default; a public client
	// (no secret) names itself in the form.
	ep.AuthStyle = oauth2.AuthStyleInHeader
	if secret == "" {
		ep.AuthStyle = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{ClientID: sp.ClientID, ClientSecret: secret, Endpoint: ep, Scopes: sp.Scopes,
		RedirectURL: a.baseURL(r) + upstreamPath + url.PathEscape(sp.ID) + "/callback"}, nil
}

// SSOProviderView is what the pages show of a provider.
type SSOProviderView struct{ ID, Name string }

func (a *API) ssoProviderViews() []SSOProviderView {
	var out []SSOProviderView
	for _, sp := range a.conf().SSOProviders {
		out = append(out, SSOProviderView{ID: sp.ID, Name: sp.Name})
	}
	return out
}

func (a *API) unreachable(r *http.Request, sp config.SSOProvider, err error) error {
	mxhttp.Logger(r).Warn("SSO provider unreachable", "idp", sp.ID, "err", err)
	return &pageError{http.StatusBadGateway, say("%s cannot be reached just now. Try again later.", sp.Name)}
}

// GET /_hearth/oauth2/upstream/{idp}?next=: sign in with a provider.
func (a *API) upstreamStart(w http.ResponseWriter, r *http.Request) error {
	sp, err := a.ssoProvider(chi.URLParam(r, "idp"))
	if err != nil {
		return err
	}
	return a.startUpstream(w, r, sp, nextPath(r.URL.Query().Get("next")), "")
}

// startUpstream sends the browser to the provider's authorization
// endpoint with a fresh state, nonce and PKCE verifier, kept for the
// callback; the state also goes into a cookie of this browser. With a
// UIA session, the sign-in re-authenticates for its m.login.sso stage.
// Every road in (/login/sso/redirect/{idpId}, the sign-in page's provider
// links, the m.login.sso fallback) is rate limited per client address,
// with the login limits: 429 and Retry-After.
func (a *API) startUpstream(w http.ResponseWriter, r *http.Request, sp config.SSOProvider, next, uiaSession string) error {
	if ok, wait := a.ssoStartIP.Allow(clientIP(r)); !ok {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(wait.Seconds())), 10))
		return pageErr(http.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.")
	}
	p, err := a.up.provider(r.Context(), sp)
	if err != nil {
		return a.unreachable(r, sp, err)
	}
	oc, err := a.oauth2Config(r, sp, p)
	if err != nil {
		return err
	}
	state, nonce, verifier := accounts.NewToken(""), accounts.NewToken(""), oauth2.GenerateVerifier()
	now := time.Now()
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertSSORequest(r.Context(), tx, state, storage.SSORequest{IdPID: sp.ID, Nonce: nonce, Verifier: verifier,
			Next: next, UIASession: uiaSession, ExpiresTS: now.Add(ssoRequestLifetime).UnixMilli()}, now.UnixMilli())
	})
	if err != nil {
		return err
	}
	// Lax: the provider sends the browser back with a top-level GET.
	http.SetCookie(w, &http.Cookie{Name: ssoStateCookie, Value: state, Path: upstreamPath, HttpOnly: true,
		Secure: a.secure(r), SameSite: http.SameSiteLaxMode, MaxAge: int(ssoRequestLifetime.Seconds())})
	opts := []oauth2.AuthCodeOption{oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)}
	if uiaSession != "" {
		opts = append(opts, oauth2.SetAuthURLParam("prompt", "login")) // a fresh sign-in, not a remembered one
	}
	http.Redirect(w, r, oc.AuthCodeURL(state, opts...), http.StatusSeeOther)
	return nil
}

// GET /_hearth/oauth2/upstream/{idp}/callback: the provider's answer.
func (a *API) upstreamCallback(w http.ResponseWriter, r *http.Request) error {
	sp, err := a.ssoProvider(chi.URLParam(r, "idp"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	q := r.URL.Query()
	state := q.Get("state")
	cookie, cerr := r.Cookie(ssoStateCookie)
	http.SetCookie(w, &http.Cookie{Name: ssoStateCookie, Value: "", Path: upstreamPath, MaxAge: -1, HttpOnly: true,
		Secure: a.secure(r), SameSite: http.SameSiteLaxMode})
	unsolicited := badPage("This sign-in was not started in this browser, was already used, or has expired. Start again from the sign-in page.")
	if state == "" || cerr != nil || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(state)) != 1 {
		return unsolicited
	}
	var req storage.SSORequest
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		req, err = storage.TakeSSORequest(ctx, tx, state, sp.ID, time.Now().UnixMilli())
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return unsolicited
	}
	if err != nil {
		return err
	}
	if e := q.Get("error"); e != "" {
		m := say("%s did not sign you in (%s).", sp.Name, e)
		if d := q.Get("error_description"); d != "" {
			m = say("%s did not sign you in: %s", sp.Name, d)
		}
		return &pageError{http.StatusForbidden, m}
	}
	p, err := a.up.provider(ctx, sp)
	if err != nil {
		return a.unreachable(r, sp, err)
	}
	oc, err := a.oauth2Config(r, sp, p)
	if err != nil {
		return err
	}
	hctx := a.up.ctx(ctx)
	tok, err := oc.Exchange(hctx, q.Get("code"), oauth2.VerifierOption(req.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) { // the provider's error code only: its body is not logged
			err = fmt.Errorf("token endpoint: %d %s", re.Response.StatusCode, re.ErrorCode)
		}
		mxhttp.Logger(r).Warn("SSO code exchange failed", "idp", sp.ID, "err", err)
		return &pageError{http.StatusBadGateway, say("%s did not confirm the sign-in. Start again from the sign-in page.", sp.Name)}
	}
	claims, issuer, subject, err := a.verifyIdentity(r, sp, p, tok, req.Nonce)
	if err != nil {
		return err
	}
	if req.UIASession != "" {
		return a.completeSSOStage(w, r, sp, req.UIASession, issuer, subject)
	}
	userID, err := a.ssoUser(ctx, sp, issuer, subject, claims)
	if err != nil {
		return err
	}
	if err := a.startSession(w, r, userID); err != nil {
		return err
	}
	http.Redirect(w, r, nextPath(req.Next), http.StatusSeeOther)
	return nil
}

// verifyIdentity checks the ID token (signature, issuer, audience,
// expiry, the nonce of this sign-in, at_hash) and returns its claims,
// completed from the userinfo endpoint when the provider has one.
func (a *API) verifyIdentity(r *http.Request, sp config.SSOProvider, p *oidc.Provider, tok *oauth2.Token, nonce string) (map[string]any, string, string, error) {
	hctx := a.up.ctx(r.Context())
	refused := &pageError{http.StatusForbidden, say("The answer of %s could not be verified. Start again from the sign-in page.", sp.Name)}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		mxhttp.Logger(r).Warn("SSO token response without an ID token", "idp", sp.ID)
		return nil, "", "", refused
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: sp.ClientID}).Verify(hctx, raw)
	if err == nil && subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
		err = errors.New("the nonce is not this sign-in's")
	}
	if err == nil && idt.AccessTokenHash != "" {
		err = idt.VerifyAccessToken(tok.AccessToken)
	}
	if err != nil {
		mxhttp.Logger(r).Warn("SSO ID token refused", "idp", sp.ID, "err", err)
		return nil, "", "", refused
	}
	claims := map[string]any{}
	if err := idt.Claims(&claims); err != nil {
		return nil, "", "", err
	}
	if p.UserInfoEndpoint() != "" {
		ui, err := p.UserInfo(hctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			return nil, "", "", a.unreachable(r, sp, fmt.Errorf("userinfo: %w", err))
		}
		// OpenID Connect Core 5.3.2: the sub must be the ID token's.
		if ui.Subject != idt.Subject {
			mxhttp.Logger(r).Warn("SSO userinfo of another subject", "idp", sp.ID)
			return nil, "", "", refused
		}
		var more map[string]any
		if err := ui.Claims(&more); err == nil {
			for k, v := range more {
				if _, ok := claims[k]; !ok {
					claims[k] = v
				}
			}
		}
	}
	return claims, idt.Issuer, idt.Subject, nil
}

// ssoUser is the account an upstream identity signs in to: the linked
// one; else one the linking policy allows; else a new one, when the
// provider may make accounts. A deactivated or locked account is refused
// (a suspended one may sign in: it is read-only, client-server API,
// Account suspension).
func (a *API) ssoUser(ctx context.Context, sp config.SSOProvider, issuer, subject string, claims map[string]any) (string, error) {
	userID, err := storage.SSOLinkedUser(ctx, a.db.Read(), issuer, subject)
	if errors.Is(err, storage.ErrNotFound) {
		userID, err = a.ssoLinkOrRegister(ctx, sp, issuer, subject, claims)
	}
	if err != nil {
		return "", err
	}
	u, err := a.db.GetUser(ctx, userID)
	if err != nil {
		return "", err
	}
	switch {
	case u.Deactivated:
		return "", &pageError{http.StatusForbidden, say("The account %s has been deactivated.", userID)}
	case u.Locked:
		return "", &pageError{http.StatusForbidden, say("The account %s is locked. Ask the server's administrator.", userID)}
	}
	return userID, nil
}

// errLinkRace: the identity was linked by a concurrent sign-in.
var errLinkRace = errors.New("the identity was linked meanwhile")

func (a *API) ssoLinkOrRegister(ctx context.Context, sp config.SSOProvider, issuer, subject string, claims map[string]any) (string, error) {
	server := a.conf().ServerName
	localpart := MapLocalpart(claimString(claims, sp.LocalpartClaim))
	email := strings.ToLower(strings.TrimSpace(claimString(claims, sp.EmailClaim)))
	verified, _ := claims["email_verified"].(bool)
	now := time.Now().UnixMilli()

	var existing string
	switch sp.LinkExisting {
	case config.SSOLinkEmail:
		if email != "" && verified {
			uid, err := storage.UserOfThreePID(ctx, a.db.Read(), "email", email)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return "", err
			}
			existing = uid
		}
	case config.SSOLinkLocalpart:
		if localpart != "" {
			ok, err := a.db.UserExists(ctx, localpart)
			if err != nil {
				return "", err
			}
			if ok {
				existing = "@" + localpart + ":" + server
			}
		}
	}
	if existing != "" {
		if u, err := a.db.GetUser(ctx, existing); err != nil {
			return "", err
		} else if u.IsGuest {
			return "", &pageError{http.StatusForbidden, say("A guest account cannot be signed in to with %s.", sp.Name)}
		}
		err := a.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.InsertSSOLink(ctx, tx, issuer, subject, sp.ID, existing, now) })
		if errors.Is(err, storage.ErrConflict) {
			return storage.SSOLinkedUser(ctx, a.db.Read(), issuer, subject)
		}
		return existing, err
	}

	if sp.Register == config.SSORegisterNever || sp.Register == config.SSORegisterAuto && a.conf().Registration != config.RegistrationOpen {
		return "", &pageError{http.StatusForbidden, say("No account on this server belongs to your %s identity, and accounts cannot be created with it. Ask the server's administrator.", sp.Name)}
	}
	if localpart == "" {
		return "", &pageError{http.StatusForbidden, say("%s did not give a user name (the %s claim), so no account can be created.", sp.Name, sp.LocalpartClaim)}
	}
	userID := "@" + localpart + ":" + server
	_, err := a.accounts.Register(ctx, accounts.NewUser{Localpart: localpart, InhibitLogin: true,
		DisplayName: claimString(claims, sp.DisplayNameClaim),
		InTx: func(ctx context.Context, tx *sql.Tx) error {
			if err := storage.InsertSSOLink(ctx, tx, issuer, subject, sp.ID, userID, now); errors.Is(err, storage.ErrConflict) {
				return errLinkRace
			} else if err != nil {
				return err
			}
			// A verified address the provider vouches for joins the
			// account, unless another account holds it.
			if email == "" || !verified {
				return nil
			}
			if _, err := storage.UserOfThreePID(ctx, tx, "email", email); !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return storage.InsertThreePID(ctx, tx, storage.ThreePID{Medium: "email", Address: email, UserID: userID, ValidatedTS: now, AddedTS: now})
		}})
	var me *mxhttp.Error
	switch {
	case errors.Is(err, errLinkRace):
		return storage.SSOLinkedUser(ctx, a.db.Read(), issuer, subject)
	case errors.As(err, &me) && me.ErrCode == "M_USER_IN_USE":
		return "", &pageError{http.StatusConflict, say("The account %s exists already and is not linked to your %s identity. Ask the server's administrator.", userID, sp.Name)}
	case errors.As(err, &me) && me.Status < 500:
		return "", &pageError{me.Status, say("No account can be created for %s: %s.", userID, me.Message)}
	case err != nil:
		return "", err
	}
	return userID, nil
}

func claimString(claims map[string]any, name string) string {
	s, _ := claims[name].(string)
	return s
}

// MapLocalpart turns a provider's user name into a localpart, by the
// spec's "Mapping from other character sets" (appendices) without the
// case escaping: lower-cased, and every byte outside a-z 0-9 . _ - / +
// (and = itself) written as =xx.
func MapLocalpart(name string) string {
	var b strings.Builder
	for _, c := range []byte(strings.ToLower(strings.TrimSpace(name))) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '_', c == '-', c == '/', c == '+':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02x", c)
		}
	}
	return b.String()
}

// validRedirectURL checks a classic client's redirectUrl: an absolute URI
// (a web page, or a native app's own scheme) that cannot run in our
// origin or carry credentials.
func validRedirectURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case s == "":
		return badPage("The application did not say where to return to (redirectUrl).")
	case err != nil || !u.IsAbs() || len(s) > 2048 || u.User != nil:
		return badPage("The application asked to return to an address that is not valid (redirectUrl).")
	}
	switch strings.ToLower(u.Scheme) {
	case "javascript", "data", "vbscript", "file", "blob", "about":
		return badPage("The application asked to return to an address that is not valid (redirectUrl).")
	case "http", "https":
		if u.Host == "" {
			return badPage("The application asked to return to an address that is not valid (redirectUrl).")
		}
	}
	return nil
}

// GET /_matrix/client/v3/login/sso/redirect[/{idpId}] (client-server API,
// Client login via SSO): with an IdP, straight to it; without, to the
// sign-in page, which offers the password and every provider. Either way
// the browser ends on sso-complete, which asks before handing the
// client a login token.
func (a *API) ssoRedirect(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	redirectURL := q.Get("redirectUrl")
	if err := validRedirectURL(redirectURL); err != nil {
		return err
	}
	next := prefix + "/sso-complete?redirectUrl=" + url.QueryEscape(redirectURL)
	if idp := chi.URLParam(r, "idpId"); idp != "" {
		sp, err := a.ssoProvider(idp)
		if err != nil {
			return err
		}
		return a.startUpstream(w, r, sp, next, "")
	}
	// The session cookie is not sent to /_matrix: sso-complete asks the
	// browser to sign in when it is not.
	if q.Get("action") == "register" && a.registrationOpen() { // v1.18
		http.Redirect(w, r, prefix+"/register-account?next="+url.QueryEscape(next), http.StatusSeeOther)
		return nil
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// redirectTarget names where a redirect URL goes, for the user to check.
func redirectTarget(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	if u.Host != "" {
		return u.Host
	}
	return u.Scheme + ":"
}

// GET /_hearth/oauth2/sso-complete?redirectUrl=: the signed-in user
// confirms that the application at redirectUrl may sign in as them (the
// spec's first security consideration for SSO login).
func (a *API) ssoCompletePage(w http.ResponseWriter, r *http.Request) error {
	user, err := a.requireUser(w, r)
	if err != nil || user == "" {
		return err
	}
	redirectURL := r.URL.Query().Get("redirectUrl")
	if err := validRedirectURL(redirectURL); err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "sso-complete", map[string]any{"UserID": user, "RedirectURL": redirectURL,
		"Target": redirectTarget(redirectURL)})
	return nil
}

// POST /_hearth/oauth2/sso-complete: continue with a single-use login
// token for m.login.token on the client's redirectUrl, or cancel.
func (a *API) ssoCompleteSubmit(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	redirectURL := r.PostForm.Get("redirectUrl")
	if err := validRedirectURL(redirectURL); err != nil {
		return err
	}
	if r.PostForm.Get("action") != "continue" {
		http.Redirect(w, r, accountPath, http.StatusSeeOther)
		return nil
	}
	token := accounts.NewToken("mlt_")
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertLoginToken(r.Context(), tx, token, user, time.Now().Add(ssoLoginTokenLifetime).UnixMilli())
	}); err != nil {
		return err
	}
	u, _ := url.Parse(redirectURL) // validated above
	v := u.Query()
	v.Del("loginToken")
	v.Set("loginToken", token)
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
	return nil
}

// stageSSO is the UIA stage a company SSO sign-in passes (client-server
// API, SSO during User-Interactive Authentication); package clientapi
// offers it to users with a linked identity.
const stageSSO = "m.login.sso"

// uiaSessionFor loads a live UIA session that offers the SSO stage.
func (a *API) uiaSessionFor(r *http.Request, id string) (storage.UIASession, error) {
	sess, err := a.db.GetUIASession(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (sess.ExpiresTS < time.Now().UnixMilli() || sess.UserID == "" ||
		!strings.Contains(sess.Flows, `"`+stageSSO+`"`)) {
		return sess, badPage("This confirmation request has expired or is not known. Start again from the application.")
	}
	return sess, err
}

// GET /_matrix/client/v3/auth/m.login.sso/fallback/web?session= (the
// fallback page of the m.login.sso UIA stage): the providers the user's
// account is linked to, each a fresh sign-in; with &idp= the sign-in
// starts.
func (a *API) ssoFallback(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	sess, err := a.uiaSessionFor(r, q.Get("session"))
	if err != nil {
		return err
	}
	links, err := storage.SSOLinksOfUser(r.Context(), a.db.Read(), sess.UserID)
	if err != nil {
		return err
	}
	var views []SSOProviderView
	for _, l := range links {
		sp, ok := a.conf().SSOProviders.Provider(l.IdPID)
		if ok && !slices.ContainsFunc(views, func(v SSOProviderView) bool { return v.ID == sp.ID }) {
			views = append(views, SSOProviderView{ID: sp.ID, Name: sp.Name})
		}
	}
	if idp := q.Get("idp"); idp != "" {
		if !slices.ContainsFunc(views, func(v SSOProviderView) bool { return v.ID == idp }) {
			return &pageError{http.StatusNotFound, say("Your account is not linked to this sign-in provider.")}
		}
		sp, err := a.ssoProvider(idp)
		if err != nil {
			return err
		}
		return a.startUpstream(w, r, sp, accountPath, sess.SessionID)
	}
	if len(views) == 0 {
		return &pageError{http.StatusForbidden, say("Your account is not linked to any sign-in provider of this server.")}
	}
	a.render(w, r, http.StatusOK, "sso-uia", map[string]any{"UserID": sess.UserID, "Session": sess.SessionID, "Providers": views})
	return nil
}

// completeSSOStage records the m.login.sso stage of a UIA session once
// the provider has signed in an identity linked to the session's user.
func (a *API) completeSSOStage(w http.ResponseWriter, r *http.Request, sp config.SSOProvider, sessionID, issuer, subject string) error {
	sess, err := a.uiaSessionFor(r, sessionID)
	if err != nil {
		return err
	}
	userID, err := storage.SSOLinkedUser(r.Context(), a.db.Read(), issuer, subject)
	if errors.Is(err, storage.ErrNotFound) || err == nil && userID != sess.UserID {
		return &pageError{http.StatusForbidden, say("You signed in to %s as someone else than %s. Start again from the application.", sp.Name, sess.UserID)}
	}
	if err != nil {
		return err
	}
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.CompleteUIAStage(r.Context(), tx, sess.SessionID, stageSSO)
	}); err != nil {
		return err
	}
	a.done(w, r, "Confirmed. Go back to the application to continue.")
	return nil
}
