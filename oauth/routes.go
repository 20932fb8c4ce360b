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
		{"POST", accountPath + "/profile", a.form(a.accountProfile)},
		{"POST", accountPath + "/deactivate", a.form(a.accountDeactivate)},
		{"POST", accountPath + "/logout", a.form(a.browserLogout)},
		{"GET", staticPath + "/style.css", http.HandlerFunc(serveCSS)},

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
