package oauth

import "net/http"

// route is one endpoint. Three kinds of handler sit behind it, each with
// its adapter: the Matrix endpoint (mxhttp errors), the OAuth endpoints
// (JSON with RFC 6749 errors, never cached) and the HTML pages (security
// headers, CSRF-checked forms).
type route struct {
	method string
	path   string
	h      http.Handler
}

// Path prefixes: the OAuth endpoints and the pages live outside /_matrix,
// under Hearth's own prefix; the metadata says where.
const (
	prefix      = "/_hearth/oauth2"
	accountPath = "/_hearth/account"
	staticPath  = "/_hearth/static"
)

// routes is every endpoint of the OAuth 2.0 server.
func (a *API) routes() []route {
	return []route{
		// Server metadata discovery (client-server API, OAuth 2.0 API).
		{"GET", "/_matrix/client/v1/auth_metadata", matrixJSON(a.metadata)},

		// Protocol endpoints, called by clients.
		{"POST", prefix + "/register", a.oauthJSON(a.registerClient)},
		{"POST", prefix + "/token", a.oauthJSON(a.token)},
		{"POST", prefix + "/revoke", a.oauthJSON(a.revoke)},
		{"POST", prefix + "/device", a.oauthJSON(a.deviceAuthorization)},

		// Pages, seen in the user's browser.
		{"GET", prefix + "/auth", a.page(a.authorize)},
		{"GET", prefix + "/login", a.page(a.loginPage)},
		{"POST", prefix + "/login", a.form(a.loginSubmit)},
		{"GET", prefix + "/register-account", a.page(a.registerPage)},
		{"POST", prefix + "/register-account", a.form(a.registerSubmit)},
		{"GET", prefix + "/consent", a.page(a.consentPage)},
		{"POST", prefix + "/consent", a.form(a.consentSubmit)},
		{"GET", prefix + "/link", a.page(a.linkPage)},
		{"POST", prefix + "/link", a.form(a.linkSubmit)},
		{"GET", accountPath, a.page(a.accountPage)},
		{"POST", accountPath + "/device", a.form(a.accountDevice)},
		{"POST", accountPath + "/cross-signing-reset", a.form(a.crossSigningReset)},
		{"POST", accountPath + "/sign-in-alerts", a.form(a.accountAlerts)},
		{"POST", accountPath + "/profile", a.form(a.accountProfile)},
		{"POST", accountPath + "/deactivate", a.form(a.accountDeactivate)},
		{"POST", accountPath + "/logout", a.form(a.browserLogout)},
		{"GET", staticPath + "/style.css", http.HandlerFunc(serveCSS)},

		// Company SSO (upstream.go): the upstream provider's round trip,
		// and m.login.sso for classic clients (client-server API, Client
		// login via SSO), which ends in an m.login.token token.
		{"GET", prefix + "/upstream/{idp}", a.page(a.upstreamStart)},
		{"GET", prefix + "/upstream/{idp}/callback", a.page(a.upstreamCallback)},
		{"GET", prefix + "/sso-complete", a.page(a.ssoCompletePage)},
		{"POST", prefix + "/sso-complete", a.form(a.ssoCompleteSubmit)},
		{"GET", "/_matrix/client/v3/login/sso/redirect", a.page(a.ssoRedirect)},
		{"GET", "/_matrix/client/r0/login/sso/redirect", a.page(a.ssoRedirect)},
		{"GET", "/_matrix/client/v3/login/sso/redirect/{idpId}", a.page(a.ssoRedirect)},
		{"GET", "/_matrix/client/v3/auth/m.login.sso/fallback/web", a.page(a.ssoFallback)},
		{"GET", "/_matrix/client/r0/auth/m.login.sso/fallback/web", a.page(a.ssoFallback)},

		// Sign-in with QR: the rendezvous (MSC4388, unstable prefix).
		{"GET", rendezvousPrefix, noStore(matrixJSON(a.rendezvousDiscover))},
		{"POST", rendezvousPrefix, noStore(matrixJSON(a.rendezvousCreate))},
		{"GET", rendezvousPrefix + "/{rendezvousId}", noStore(matrixJSON(a.rendezvousRead))},
		{"PUT", rendezvousPrefix + "/{rendezvousId}", noStore(matrixJSON(a.rendezvousWrite))},
		{"DELETE", rendezvousPrefix + "/{rendezvousId}", noStore(matrixJSON(a.rendezvousDelete))},
	}
}

// noStore keeps responses out of caches.
func noStore(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}
