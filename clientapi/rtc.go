package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rtc"
)

// MatrixRTC transports (MSC4143) and the LiveKit authorization service
// (MSC4195, lk-jwt-service's endpoints). The service's work (verifying
// the OpenID token, the room, the SFU's room, signing) is rtc.LiveKit's;
// its routes are in the client API's table so that they get the same
// error writing, CORS, body limit, access log and metrics as every other
// endpoint.

const msc4143 = "/_matrix/client/unstable/org.matrix.msc4143"

// rtcTransports are the transports this server offers: its LiveKit SFU,
// reached through its authorization service, when configured.
func (a *API) rtcTransports() []map[string]string {
	s := a.live()
	u := s.cfg.LiveKitServiceURL()
	if u == "" || s.livekit == nil {
		return []map[string]string{}
	}
	return []map[string]string{{"type": "livekit", "livekit_service_url": u}}
}

// GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports
func (a *API) getRTCTransports(r *http.Request, _ accounts.Caller) (any, error) {
	return map[string]any{"rtc_transports": a.rtcTransports()}, nil
}

// limitRTC rate-limits the authorization service per client IP: it is
// public, and a token check may cost a federation request.
func (a *API) limitRTC(r *http.Request) error {
	l := a.live().limits.rtcIP
	if l == nil {
		return nil
	}
	return a.limit(r, l, "rtc:"+clientIP(r))
}

// POST /_hearth/livekit/get_token (MSC4195)
func (a *API) liveKitGetToken(r *http.Request, _ accounts.Caller) (any, error) {
	lk := a.live().livekit
	if lk == nil {
		return nil, mxhttp.Unrecognized("LiveKit is not configured on this server")
	}
	if err := a.limitRTC(r); err != nil {
		return nil, err
	}
	var req rtc.TokenRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return lk.GetToken(r.Context(), req)
}

// POST /_hearth/livekit/sfu/get (lk-jwt-service's legacy endpoint)
func (a *API) liveKitLegacyToken(r *http.Request, _ accounts.Caller) (any, error) {
	lk := a.live().livekit
	if lk == nil {
		return nil, mxhttp.Unrecognized("LiveKit is not configured on this server")
	}
	if err := a.limitRTC(r); err != nil {
		return nil, err
	}
	var req rtc.LegacyTokenRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return lk.GetLegacyToken(r.Context(), req)
}

// liveKitService is where the authorization service's routes live.
const liveKitService = config.LiveKitServicePath
