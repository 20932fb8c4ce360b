package federation

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// End-to-end encryption over federation (server-server API, Device
// Management and End-to-End Encryption): the endpoints other servers ask
// about our users' devices and keys, and e2eeRemote, the same requests
// made by us, which package e2ee uses through its Remote interface.

// localUser checks that userID is one of ours.
func (a *API) localUser(userID string) error {
	if senderServer(userID) != a.serverName {
		return mxhttp.InvalidParam("%s is not a user of this server", userID)
	}
	return nil
}

// GET /_matrix/federation/v1/user/devices/{userId}
func (a *API) userDevices(r *http.Request, origin spec.ServerName) (any, error) {
	userID := pathParam(r, "userId")
	if err := a.localUser(userID); err != nil {
		return nil, err
	}
	res, err := a.e2ee.LocalUserDevices(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// POST /_matrix/federation/v1/user/keys/query
func (a *API) userKeysQuery(r *http.Request, origin spec.ServerName) (any, error) {
	deviceKeys, err := mxhttp.ReadRequiredField[map[string][]string](r, "device_keys")
	if err != nil {
		return nil, err
	}
	res, err := a.e2ee.LocalKeys(r.Context(), deviceKeys)
	if err != nil {
		return nil, err
	}
	return res, nil
}

// POST /_matrix/federation/v1/user/keys/claim
func (a *API) userKeysClaim(r *http.Request, origin spec.ServerName) (any, error) {
	claims, err := mxhttp.ReadRequiredField[map[string]map[string]string](r, "one_time_keys")
	if err != nil {
		return nil, err
	}
	keys, err := a.e2ee.ClaimLocalKeys(r.Context(), claims)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_keys": keys}, nil
}

// e2eeRemote is e2ee.Remote over the signing client and the send queue.
type e2eeRemote struct{ a *API }

var _ e2ee.Remote = e2eeRemote{}

// E2EERemote is what package e2ee plugs in to reach other servers.
func (a *API) E2EERemote() e2ee.Remote { return e2eeRemote{a} }

func (c e2eeRemote) QueueEDU(ctx context.Context, tx *sql.Tx, servers []string, eduType string, content any) error {
	b, err := json.Marshal(content)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", eduType, err)
	}
	dests := make([]spec.ServerName, len(servers))
	for i, s := range servers {
		dests[i] = spec.ServerName(s)
	}
	return c.a.queue.SendEDUTx(ctx, tx, dests, gomatrixserverlib.EDU{Type: eduType, Content: b})
}

func (c e2eeRemote) QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (e2ee.RemoteKeys, error) {
	var out e2ee.RemoteKeys
	err := c.a.request(ctx, http.MethodPost, spec.ServerName(server), "/_matrix/federation/v1/user/keys/query",
		map[string]any{"device_keys": deviceKeys}, &out)
	return out, err
}

func (c e2eeRemote) ClaimKeys(ctx context.Context, server string, claims map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	var out struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	err := c.a.request(ctx, http.MethodPost, spec.ServerName(server), "/_matrix/federation/v1/user/keys/claim",
		map[string]any{"one_time_keys": claims}, &out)
	return out.OneTimeKeys, err
}

func (c e2eeRemote) UserDevices(ctx context.Context, server, userID string) (e2ee.UserDevices, error) {
	var out e2ee.UserDevices
	err := c.a.request(ctx, http.MethodGet, spec.ServerName(server), "/_matrix/federation/v1/user/devices/"+url.PathEscape(userID), nil, &out)
	return out, err
}

// request makes a signed request with an optional JSON body to another
// server and decodes the answer.
func (a *API) request(ctx context.Context, method string, server spec.ServerName, path string, body, out any) error {
	if server == a.serverName {
		return fmt.Errorf("request to ourselves")
	}
	fr := fclient.NewFederationRequest(method, a.serverName, server, path)
	if body != nil {
		if err := fr.SetContent(body); err != nil {
			return err
		}
	}
	if err := fr.Sign(a.serverName, a.key.ID, a.key.Private); err != nil {
		return err
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		return err
	}
	return a.client.DoRequestAndParseResponse(ctx, req, out)
}
