package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Third-party networks (client-server API, third_party_networks module;
// third_party_lookup.yaml). Protocols come from application service
// bridges: each question goes to the services that registered the
// protocol (appservice.Pusher), and with none there are no protocols and
// every lookup is 404 M_NOT_FOUND.

func (a *API) thirdPartyRoutes(v3 func(string, string, http.HandlerFunc)) {
	v3("GET", "/thirdparty/protocols", a.authed(a.thirdPartyProtocols))
	v3("GET", "/thirdparty/protocol/{protocol}", a.authed(a.thirdPartyProtocol))
	v3("GET", "/thirdparty/location/{protocol}", a.authed(a.thirdPartyLookup("location")))
	v3("GET", "/thirdparty/user/{protocol}", a.authed(a.thirdPartyLookup("user")))
	v3("GET", "/thirdparty/location", a.authed(a.thirdPartyReverseLookup("location", "alias")))
	v3("GET", "/thirdparty/user", a.authed(a.thirdPartyReverseLookup("user", "userid")))
}

// GET /_matrix/client/v3/thirdparty/protocols.
func (a *API) thirdPartyProtocols(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteJSON(w, http.StatusOK, a.appsvc.Protocols(r.Context()))
}

// GET /_matrix/client/v3/thirdparty/protocol/{protocol}.
func (a *API) thirdPartyProtocol(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	protocol := pathParam(r, "protocol")
	info, ok := a.appsvc.Protocol(r.Context(), protocol)
	if !ok {
		mxhttp.WriteError(w, r, mxhttp.NotFound("No bridge provides the protocol %s", protocol))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, info)
}

// GET /_matrix/client/v3/thirdparty/{location,user}/{protocol}: the query
// string holds the protocol's fields and goes to the services as it is.
func (a *API) thirdPartyLookup(kind string) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
		protocol := pathParam(r, "protocol")
		found := a.appsvc.Lookup(r.Context(), kind, protocol, r.URL.Query())
		if len(found) == 0 {
			mxhttp.WriteError(w, r, mxhttp.NotFound("No third-party %s found for protocol %s", kind, protocol))
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, found)
	}
}

// GET /_matrix/client/v3/thirdparty/location?alias= and /user?userid=.
func (a *API) thirdPartyReverseLookup(kind, param string) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
		v := r.URL.Query().Get(param)
		if v == "" {
			mxhttp.WriteError(w, r, mxhttp.MissingParam("%s is required", param))
			return
		}
		found := a.appsvc.Lookup(r.Context(), kind, "", map[string][]string{param: {v}})
		if len(found) == 0 {
			mxhttp.WriteError(w, r, mxhttp.NotFound("No third-party %s found for %s", kind, v))
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, found)
	}
}
