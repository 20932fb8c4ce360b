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

// GET /_matrix/client/v3/thirdparty/protocols.
func (a *API) thirdPartyProtocols(r *http.Request, c accounts.Caller) (any, error) {
	return a.appsvc.Protocols(r.Context()), nil
}

// GET /_matrix/client/v3/thirdparty/protocol/{protocol}.
func (a *API) thirdPartyProtocol(r *http.Request, c accounts.Caller) (any, error) {
	protocol := pathParam(r, "protocol")
	info, ok := a.appsvc.Protocol(r.Context(), protocol)
	if !ok {
		return nil, mxhttp.NotFound("No bridge provides the protocol %s", protocol)
	}
	return info, nil
}

// GET /_matrix/client/v3/thirdparty/{location,user}/{protocol}: the query
// string holds the protocol's fields and goes to the services as it is.
func (a *API) thirdPartyLookup(kind string) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		protocol := pathParam(r, "protocol")
		found := a.appsvc.Lookup(r.Context(), kind, protocol, r.URL.Query())
		if len(found) == 0 {
			return nil, mxhttp.NotFound("No third-party %s found for protocol %s", kind, protocol)
		}
		return found, nil
	}
}

// GET /_matrix/client/v3/thirdparty/location?alias= and /user?userid=.
func (a *API) thirdPartyReverseLookup(kind, param string) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		v := r.URL.Query().Get(param)
		if v == "" {
			return nil, mxhttp.MissingParam("%s is required", param)
		}
		found := a.appsvc.Lookup(r.Context(), kind, "", map[string][]string{param: {v}})
		if len(found) == 0 {
			return nil, mxhttp.NotFound("No third-party %s found for %s", kind, v)
		}
		return found, nil
	}
}
