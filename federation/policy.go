package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// policyV1 is the Policy Servers API (server-server API, v1.18).
const policyV1 = "/_matrix/policy/v1"

// policySignTimeout bounds the wait for a policy server's answer: the
// room's sends wait for it.
const policySignTimeout = 20 * time.Second

// POST /_matrix/policy/v1/sign: this server as a policy server signs an
// event of a room that uses it (rooms.PolicySign); a server that is not
// configured as one answers 404 M_UNRECOGNIZED, as for any endpoint it
// does not serve. The ACL is not applied (the spec's MAY).
func (a *API) policySign(r *http.Request, _ spec.ServerName) (any, error) {
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	return a.rooms.PolicySign(r.Context(), raw)
}

// PolicySign asks the policy server at server to sign pdu (rooms.PolicyClient).
func (c roomClient) PolicySign(ctx context.Context, server spec.ServerName, pdu gomatrixserverlib.PDU) (map[string]map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, policySignTimeout)
	defer cancel()
	fr := fclient.NewFederationRequest(http.MethodPost, c.a.serverName, server, policyV1+"/sign")
	if err := fr.SetContent(json.RawMessage(pdu.JSON())); err != nil {
		return nil, err
	}
	if err := fr.Sign(c.a.serverName, c.a.key.ID, c.a.key.Private); err != nil {
		return nil, err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return nil, err
	}
	var res map[string]map[string]string
	if err := c.a.client.DoRequestAndParseResponse(ctx, req, &res); err != nil {
		return nil, readable(err)
	}
	return res, nil
}
