package federation

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// handler is an endpoint of the federation API: it returns the response
// body or a Matrix error, and mxhttp.Respond writes either. origin is the
// server whose X-Matrix signature was verified, empty on public routes.
type handler func(r *http.Request, origin spec.ServerName) (any, error)

// access is what a route needs before its handler runs.
type access int

const (
	public access = iota // nothing (key publishing, version)
	signed               // a valid X-Matrix signature of the origin, addressed to us
	room                 // signed, and the {roomId}'s server ACL allows the origin
)

type route struct {
	method string
	path   string
	access access
	h      handler
}

const (
	keyV2 = "/_matrix/key/v2"
	fedV1 = "/_matrix/federation/v1"
	fedV2 = "/_matrix/federation/v2"
)

// routes is every endpoint of the server-server API, grouped by spec
// section. Unknown paths stay 404 M_UNRECOGNIZED.
func (a *API) routes() []route {
	return []route{
		// Server discovery and key publishing, unauthenticated.
		{"GET", fedV1 + "/version", public, a.serverVersion},
		{"GET", keyV2 + "/server", public, a.serverKeys},
		{"GET", keyV2 + "/server/{keyID}", public, a.serverKeys}, // deprecated form, still requested by older servers
		{"GET", keyV2 + "/query/{serverName}", public, a.queryKeysGet},
		{"POST", keyV2 + "/query", public, a.queryKeysPost},

		// OpenID: any third party may ask, with the user's token.
		{"GET", fedV1 + "/openid/userinfo", public, a.openIDUserInfo},

		// Transactions.
		{"PUT", fedV1 + "/send/{txnId}", signed, a.send},

		// Joining, leaving, knocking, inviting.
		{"GET", fedV1 + "/make_join/{roomId}/{userId}", room, a.makeJoin},
		{"PUT", fedV1 + "/send_join/{roomId}/{eventId}", room, a.sendJoinV1},
		{"PUT", fedV2 + "/send_join/{roomId}/{eventId}", room, a.sendJoin},
		{"GET", fedV1 + "/make_leave/{roomId}/{userId}", room, a.makeLeave},
		{"PUT", fedV1 + "/send_leave/{roomId}/{eventId}", room, a.sendLeaveV1},
		{"PUT", fedV2 + "/send_leave/{roomId}/{eventId}", room, a.sendLeave},
		{"GET", fedV1 + "/make_knock/{roomId}/{userId}", room, a.makeKnock},
		{"PUT", fedV1 + "/send_knock/{roomId}/{eventId}", room, a.sendKnock},
		{"PUT", fedV2 + "/invite/{roomId}/{eventId}", room, a.invite},

		// Retrieving events and state.
		{"GET", fedV1 + "/state/{roomId}", room, a.state},
		{"GET", fedV1 + "/state_ids/{roomId}", room, a.stateIDs},
		{"GET", fedV1 + "/event/{eventId}", signed, a.event}, // checks the ACL of the event's room itself
		{"GET", fedV1 + "/backfill/{roomId}", room, a.backfill},
		{"POST", fedV1 + "/get_missing_events/{roomId}", room, a.getMissingEvents},
		{"GET", fedV1 + "/event_auth/{roomId}/{eventId}", room, a.eventAuth},
		{"GET", fedV1 + "/timestamp_to_event/{roomId}", room, a.timestampToEvent},

		// Queries, the room directory, spaces.
		{"GET", fedV1 + "/query/directory", signed, a.queryDirectory},
		{"GET", fedV1 + "/query/profile", signed, a.queryProfile},
		{"GET", fedV1 + "/publicRooms", signed, a.getPublicRooms},
		{"POST", fedV1 + "/publicRooms", signed, a.postPublicRooms},
		{"GET", fedV1 + "/hierarchy/{roomId}", room, a.hierarchy},

		// Content repository.
		{"GET", fedV1 + "/media/download/{mediaId}", signed, a.mediaDownload},
		{"GET", fedV1 + "/media/thumbnail/{mediaId}", signed, a.mediaThumbnail},

		// Device management and end-to-end encryption.
		{"GET", fedV1 + "/user/devices/{userId}", signed, a.userDevices},
		{"POST", fedV1 + "/user/keys/query", signed, a.userKeysQuery},
		{"POST", fedV1 + "/user/keys/claim", signed, a.userKeysClaim},

		// Policy Servers (v1.18): answered when policy_server is on.
		{"POST", policyV1 + "/sign", signed, a.policySign},
	}
}

// maxTransactionBytes bounds an inbound transaction: up to 50 PDUs of at
// most 64 KiB and 100 EDUs, which have no size limit of their own; like
// Synapse, 200 * 64 KiB (12.5 MiB).
const maxTransactionBytes = 200 * 65536

// bodyLimits are the routes whose request body may be larger than
// max_request_bytes.
func (a *API) bodyLimits() map[string]int64 {
	return map[string]int64{
		"PUT " + fedV1 + "/send/{txnId}": max(a.maxRequestBytes, maxTransactionBytes),
	}
}

// Routes registers every federation endpoint on r.
func (a *API) Routes(r chi.Router) {
	limits := a.bodyLimits()
	for _, rt := range a.routes() {
		var h http.Handler = a.serve(rt)
		if n, ok := limits[rt.method+" "+rt.path]; ok {
			h = mxhttp.LimitBody(n)(h)
		}
		r.Method(rt.method, rt.path, h)
	}
}

// serve is the one adapter between HTTP and a handler: it verifies the
// request's signature and the room's ACL as the route needs, runs the
// handler and writes its result or error.
func (a *API) serve(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var origin spec.ServerName
		if rt.access != public {
			vr, err := a.verify(r)
			if err != nil {
				mxhttp.WriteError(w, r, err)
				return
			}
			r, origin = vr, Origin(vr.Context())
		}
		if rt.access == room {
			if err := a.checkACL(r.Context(), pathParam(r, "roomId"), origin); err != nil {
				mxhttp.WriteError(w, r, err)
				return
			}
		}
		body, err := rt.h(r, origin)
		mxhttp.Respond(w, r, body, err)
	}
}
