package oauth

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// registrationOpen says whether the sign-up page exists: registration
// open, or by registration token, and password login on (the page makes
// a password account).
func (a *API) registrationOpen() bool {
	c := a.conf()
	return c.PasswordLogin && (c.Registration == config.RegistrationOpen || c.Registration == config.RegistrationToken)
}

// GET /_hearth/oauth2/auth: the authorization request (RFC 6749 section
// 4.1.1, client-server API, Authorisation code flow). An unknown client or
// redirect URI is shown to the user, never redirected to (RFC 6749 section
// 4.1.2.1); every other error goes back to the client.
func (a *API) authorize(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for k, vs := range q {
		if len(vs) > 1 {
			return badPage("The parameter %s is given more than once.", k)
		}
	}
	c, ok, err := a.loadClient(r, q.Get("client_id"))
	if err != nil {
		return err
	}
	if !ok {
		return badPage("This application is not registered with this server (unknown client_id).")
	}
	redirectURI := q.Get("redirect_uri")
	if !matchRedirectURI(c, redirectURI) {
		return badPage("This application asked to return to an address it did not register (redirect_uri).")
	}
	mode := q.Get("response_mode")
	if mode == "" {
		mode = "query" // RFC 6749's default for the code response type
	}
	state := q.Get("state")
	fail := func(code, desc string) error {
		if mode != "query" && mode != "fragment" {
			mode = "query"
		}
		http.Redirect(w, r, callbackURL(redirectURI, mode, url.Values{"error": {code}, "error_description": {desc}, "state": {state}}), http.StatusSeeOther)
		return nil
	}
	switch {
	case mode != "query" && mode != "fragment":
		return fail("invalid_request", "response_mode must be query or fragment")
	case q.Get("response_type") != "code" || !c.allowsGrant(grantAuthorizationCode):
		return fail("unsupported_response_type", "Only the code response type is supported")
	case state == "":
		return fail("invalid_request", "state is required")
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		return fail("invalid_request", "PKCE with code_challenge_method S256 is required")
	}
	deviceID, oe := parseScope(q.Get("scope"))
	if oe != nil {
		return fail(oe.code, oe.description)
	}
	prompt := q.Get("prompt")
	switch prompt {
	case "", "login", "consent":
	case "create":
		if !a.registrationOpen() {
			return fail("invalid_request", "Registration is closed on this server")
		}
	case "none":
		return fail("login_required", "The user must sign in and consent")
	default:
		return fail("invalid_request", "Unsupported prompt value")
	}
	now := time.Now()
	req := storage.OAuthAuthRequest{RequestID: accounts.NewToken(""), ClientID: c.ClientID, RedirectURI: redirectURI,
		Scope: strings.Join(strings.Fields(q.Get("scope")), " "), DeviceID: deviceID, State: state, ResponseMode: mode,
		CodeChallenge: q.Get("code_challenge"), Prompt: prompt, CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(authRequestLifetime).UnixMilli()}
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return storage.InsertOAuthAuthRequest(r.Context(), tx, req) }); err != nil {
		return err
	}
	consent := prefix + "/consent?request=" + url.QueryEscape(req.RequestID)
	user, err := a.sessionUser(r)
	switch {
	case err != nil:
		return err
	case prompt == "create":
		http.Redirect(w, r, prefix+"/register-account?next="+url.QueryEscape(consent), http.StatusSeeOther)
	case user == "" || prompt == "login":
		http.Redirect(w, r, prefix+"/login?next="+url.QueryEscape(consent), http.StatusSeeOther)
	default:
		http.Redirect(w, r, consent, http.StatusSeeOther)
	}
	return nil
}

// callbackURL puts params on the redirect URI, in its query or fragment
// (client-server API, Callback).
func callbackURL(redirectURI, mode string, params url.Values) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI // validated at registration; cannot happen
	}
	if mode == "fragment" {
		u.Fragment = ""
		u.RawFragment = ""
		return u.String() + "#" + params.Encode()
	}
	q := u.Query()
	for k, vs := range params {
		q[k] = vs
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// GET /_hearth/oauth2/login: the sign-in page, with the password form
// unless password login is off.
func (a *API) loginPage(w http.ResponseWriter, r *http.Request) error {
	a.render(w, r, http.StatusOK, "login", map[string]any{"Next": nextPath(r.URL.Query().Get("next")),
		"CanRegister": a.registrationOpen(), "ServerName": a.conf().ServerName, "PasswordLogin": a.conf().PasswordLogin,
		"Providers": a.ssoProviderViews()})
	return nil
}

// POST /_hearth/oauth2/login: password sign-in, limited per address.
func (a *API) loginSubmit(w http.ResponseWriter, r *http.Request) error {
	next := nextPath(r.PostForm.Get("next"))
	again := func(status int, format string) error {
		a.render(w, r, status, "login", map[string]any{"Next": next, "CanRegister": a.registrationOpen(),
			"ServerName": a.conf().ServerName, "PasswordLogin": a.conf().PasswordLogin, "Error": say(format), "Username": r.PostForm.Get("username"),
			"Providers": a.ssoProviderViews()})
		return nil
	}
	if !a.conf().PasswordLogin {
		return again(http.StatusForbidden, "Signing in with a password is turned off on this server.")
	}
	if !allow(a.passwordIP, clientIP(r)) {
		return again(http.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.")
	}
	localpart, err := a.accounts.Localpart(accounts.PasswordCredentials{User: strings.TrimSpace(r.PostForm.Get("username"))})
	if err != nil {
		return again(http.StatusForbidden, "Invalid username or password.")
	}
	u, err := a.accounts.CheckPassword(r.Context(), localpart, r.PostForm.Get("password"))
	var me *mxhttp.Error
	if errors.As(err, &me) && me.Status == http.StatusForbidden || err == nil && (u.Deactivated || u.Locked || u.UserID == "") {
		return again(http.StatusForbidden, "Invalid username or password.")
	}
	if err != nil {
		return err
	}
	if err := a.startSession(w, r, u.UserID); err != nil {
		return err
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// GET /_hearth/oauth2/register-account: the sign-up page (prompt=create),
// when registration is open or by token.
func (a *API) registerPage(w http.ResponseWriter, r *http.Request) error {
	if !a.registrationOpen() {
		return pageErr(http.StatusForbidden, "Registration is closed on this server.")
	}
	a.render(w, r, http.StatusOK, "register", map[string]any{"Next": nextPath(r.URL.Query().Get("next")),
		"NeedToken": a.conf().Registration == config.RegistrationToken, "ServerName": a.conf().ServerName})
	return nil
}

// POST /_hearth/oauth2/register-account creates the account (with its
// registration token, used once, in the same transaction) and signs in.
func (a *API) registerSubmit(w http.ResponseWriter, r *http.Request) error {
	if !a.registrationOpen() {
		return pageErr(http.StatusForbidden, "Registration is closed on this server.")
	}
	f := r.PostForm
	next := nextPath(f.Get("next"))
	needToken := a.conf().Registration == config.RegistrationToken
	again := func(status int, m msg) error {
		a.render(w, r, status, "register", map[string]any{"Next": next, "NeedToken": needToken,
			"ServerName": a.conf().ServerName, "Error": m, "Username": f.Get("username")})
		return nil
	}
	if !allow(a.passwordIP, clientIP(r)) {
		return again(http.StatusTooManyRequests, say("Too many attempts. Wait a minute and try again."))
	}
	if f.Get("password") == "" || f.Get("password") != f.Get("password2") {
		return again(http.StatusBadRequest, say("The two passwords must be the same and not empty."))
	}
	nu := accounts.NewUser{Localpart: strings.TrimSpace(f.Get("username")), Password: f.Get("password"), InhibitLogin: true}
	if needToken {
		token := strings.TrimSpace(f.Get("token"))
		nu.InTx = func(ctx context.Context, tx *sql.Tx) error {
			ok, err := storage.UseRegistrationToken(ctx, tx, token, time.Now().UnixMilli())
			if err == nil && !ok {
				err = mxhttp.Forbidden("The registration token is not valid")
			}
			return err
		}
	}
	login, err := a.accounts.Register(r.Context(), nu)
	var me *mxhttp.Error
	if errors.As(err, &me) && me.Status < 500 {
		return again(me.Status, registerError(me))
	}
	if err != nil {
		return err
	}
	if err := a.startSession(w, r, login.UserID); err != nil {
		return err
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

// registerError is what the sign-up page says of a refused registration.
func registerError(me *mxhttp.Error) msg {
	switch me.ErrCode {
	case "M_USER_IN_USE":
		return say("That username is taken. Choose another.")
	case "M_INVALID_USERNAME":
		return say("That username is not allowed. Use lowercase letters, digits and . _ = - / + only.")
	case "M_FORBIDDEN":
		return say("The registration token is not valid.")
	}
	return say("%s.", me.Message)
}

// pendingRequest loads an authorization request still waiting for consent.
func (a *API) pendingRequest(r *http.Request, id string) (storage.OAuthAuthRequest, client, error) {
	req, err := a.db.OAuthAuthRequestByID(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (req.UserID != "" || req.ExpiresTS < time.Now().UnixMilli()) {
		return req, client{}, badPage("This sign-in request has expired or was already answered. Start again from the application.")
	}
	if err != nil {
		return req, client{}, err
	}
	c, ok, err := a.loadClient(r, req.ClientID)
	if err == nil && !ok {
		err = badPage("The application is no longer registered.")
	}
	return req, c, err
}

// GET /_hearth/oauth2/consent: what the application asks, for the
// signed-in user to allow or deny.
func (a *API) consentPage(w http.ResponseWriter, r *http.Request) error {
	user, err := a.requireUser(w, r)
	if err != nil || user == "" {
		return err
	}
	req, c, err := a.pendingRequest(r, r.URL.Query().Get("request"))
	if err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "consent", a.clientView(r, c, map[string]any{
		"Request": req.RequestID, "DeviceID": req.DeviceID, "UserID": user, "Action": prefix + "/consent"}))
	return nil
}

// clientView adds what the pages show of a client to data, localized for
// the browser.
func (a *API) clientView(r *http.Request, c client, data map[string]any) map[string]any {
	langs := acceptLanguages(r)
	name := c.localized("client_name", c.ClientName, langs)
	if name == "" {
		if u, err := url.Parse(c.ClientURI); err == nil {
			name = u.Host
		}
	}
	data["ClientName"] = name
	data["ClientURI"] = c.ClientURI
	data["LogoURI"] = c.localized("logo_uri", c.LogoURI, langs)
	data["TOSURI"] = c.localized("tos_uri", c.TOSURI, langs)
	data["PolicyURI"] = c.localized("policy_uri", c.PolicyURI, langs)
	return data
}

// acceptLanguages are the browser's language tags, most preferred first
// (quality values are ignored: browsers list them in order).
func acceptLanguages(r *http.Request) []string {
	var out []string
	for _, part := range strings.Split(r.Header.Get("Accept-Language"), ",") {
		tag, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if tag != "" && tag != "*" {
			out = append(out, tag)
		}
	}
	return out
}

// POST /_hearth/oauth2/consent: allow gives the client a single-use code
// (stored hashed); deny sends access_denied. Either way the browser goes
// back to the client.
func (a *API) consentSubmit(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	req, _, err := a.pendingRequest(r, r.PostForm.Get("request"))
	if err != nil {
		return err
	}
	params := url.Values{"state": {req.State}}
	if r.PostForm.Get("action") != "allow" {
		if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return storage.DeleteOAuthAuthRequest(r.Context(), tx, req.RequestID) }); err != nil {
			return err
		}
		params.Set("error", "access_denied")
		params.Set("error_description", "The user denied the request")
	} else {
		code := accounts.NewToken("")
		var granted bool
		err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
			var err error
			granted, err = storage.GrantOAuthAuthRequest(r.Context(), tx, req.RequestID, user, storage.TokenHash(code), time.Now().Add(codeLifetime).UnixMilli())
			return err
		})
		if err != nil {
			return err
		}
		if !granted {
			return badPage("This sign-in request was already answered.")
		}
		params.Set("code", code)
	}
	http.Redirect(w, r, callbackURL(req.RedirectURI, req.ResponseMode, params), http.StatusSeeOther)
	return nil
}
