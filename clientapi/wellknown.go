package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// GET /.well-known/matrix/client (client-server API, Server Discovery). With
// no well_known_client configured there is nothing to discover: 404, as the
// spec's discovery algorithm expects. With LiveKit configured it also
// names the RTC transports (org.matrix.msc4143.rtc_foci, where Element Call
// looks for them).
func (a *API) wellKnownClient(r *http.Request, _ accounts.Caller) (any, error) {
	base := a.conf().WellKnownClient
	if base == "" {
		return nil, mxhttp.NotFound("No client discovery information is configured")
	}
	body := map[string]any{
		"m.homeserver": map[string]string{"base_url": base},
	}
	if t := a.rtcTransports(); len(t) > 0 {
		body["org.matrix.msc4143.rtc_foci"] = t
	}
	return body, nil
}

// GET /.well-known/matrix/server (server-server API, Server discovery).
func (a *API) wellKnownServer(r *http.Request, _ accounts.Caller) (any, error) {
	server := a.conf().WellKnownServer
	if server == "" {
		return nil, mxhttp.NotFound("No server delegation is configured")
	}
	return map[string]string{"m.server": server}, nil
}

// GET /.well-known/matrix/policy_server (v1.18): the policy key, for
// clients filling in m.room.policy; 404 when this server is not a policy
// server ("No policy server information available").
func (a *API) wellKnownPolicyServer(r *http.Request, _ accounts.Caller) (any, error) {
	key := a.rooms.PolicyPublicKey()
	if key == "" {
		return nil, mxhttp.NotFound("This server is not a policy server")
	}
	return map[string]any{"public_keys": map[string]string{"ed25519": key}}, nil
}
