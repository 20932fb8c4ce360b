package admin

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// handler is an endpoint of the admin API: it returns the response body
// or a Matrix error, and mxhttp.Respond writes either. c is the
// authenticated server admin.
type handler func(r *http.Request, c accounts.Caller) (any, error)

// access is what a route needs before its handler runs.
type access int

const (
	admin access = iota // a valid access token of a server admin
)

type route struct {
	method string
	path   string
	access access
	h      handler
}

// Path prefixes.
const (
	v1 = "/_synapse/admin/v1"
	v2 = "/_synapse/admin/v2"
	v3 = "/_synapse/admin/v3"
)

// routes is every endpoint of the Synapse-compatible admin API served
// here (server notices and shared-secret registration are clientapi's, in
// its routes.go: they share the notices room and the registration code
// with the client API).
func (a *API) routes() []route {
	return []route{
		{"GET", v1 + "/server_version", admin, a.serverVersion},

		// Users.
		{"GET", v2 + "/users", admin, a.listUsers(2)},
		{"GET", v3 + "/users", admin, a.listUsers(3)},
		{"GET", v2 + "/users/{userId}", admin, a.getUser},
		{"PUT", v2 + "/users/{userId}", admin, a.putUser},
		{"POST", v1 + "/deactivate/{userId}", admin, a.deactivateUser},
		{"POST", v1 + "/reset_password/{userId}", admin, a.resetPassword},
		{"GET", v1 + "/whois/{userId}", admin, a.whois},
		{"GET", v1 + "/users/{userId}/admin", admin, a.getUserAdmin},
		{"PUT", v1 + "/users/{userId}/admin", admin, a.putUserAdmin},
		{"GET", v1 + "/users/{userId}/joined_rooms", admin, a.userJoinedRooms},
		{"GET", v2 + "/users/{userId}/devices", admin, a.listDevices},
		{"GET", v2 + "/users/{userId}/devices/{deviceId}", admin, a.getDevice},
		{"DELETE", v2 + "/users/{userId}/devices/{deviceId}", admin, a.deleteDevice},
		{"POST", v2 + "/users/{userId}/delete_devices", admin, a.deleteDevices},
		{"GET", v1 + "/username_available", admin, a.usernameAvailable},
		{"GET", v1 + "/users/{userId}/media", admin, a.userMedia},
		{"GET", v1 + "/users/{userId}/memberships", admin, a.userMemberships},
		{"GET", v1 + "/users/{userId}/accountdata", admin, a.userAccountData},
		{"GET", v1 + "/users/{userId}/pushers", admin, a.userPushers},
		{"GET", v1 + "/users/{userId}/sent_invite_count", admin, a.sentInviteCount},
		{"GET", v1 + "/users/{userId}/cumulative_joined_room_count", admin, a.joinedRoomCount},
		{"GET", v1 + "/search_users/{userId}", admin, a.searchUsers},
		{"POST", v1 + "/users/{userId}/login", admin, a.loginAsUser},
		{"POST", v1 + "/users/{userId}/shadow_ban", admin, a.shadowBan(true)},
		{"DELETE", v1 + "/users/{userId}/shadow_ban", admin, a.shadowBan(false)},
		{"GET", v1 + "/users/{userId}/override_ratelimit", admin, a.getRatelimit},
		{"POST", v1 + "/users/{userId}/override_ratelimit", admin, a.setRatelimit},
		{"DELETE", v1 + "/users/{userId}/override_ratelimit", admin, a.deleteRatelimit},
		{"PUT", v2 + "/users/{userId}/devices/{deviceId}", admin, a.putDevice},
		{"POST", v2 + "/users/{userId}/devices", admin, a.createDevice},
		{"GET", v1 + "/auth_providers/{provider}/users/{externalId}", admin, a.userByExternalID},
		{"GET", v1 + "/threepid/{medium}/users/{address}", admin, a.userByThreePID},
		{"PUT", v1 + "/suspend/{userId}", admin, a.suspendUser},
		{"POST", v1 + "/users/{userId}/_allow_cross_signing_replacement_without_uia", admin, a.allowCrossSigningReplacement},

		// Rooms.
		{"GET", v1 + "/rooms", admin, a.listRooms},
		{"GET", v1 + "/rooms/{roomId}", admin, a.roomDetails},
		{"GET", v1 + "/rooms/{roomId}/members", admin, a.roomMembers},
		{"GET", v1 + "/rooms/{roomId}/state", admin, a.roomState},
		{"GET", v1 + "/rooms/{roomId}/block", admin, a.getRoomBlock},
		{"PUT", v1 + "/rooms/{roomId}/block", admin, a.putRoomBlock},
		{"DELETE", v1 + "/rooms/{roomId}", admin, a.deleteRoomNow},
		{"DELETE", v2 + "/rooms/{roomId}", admin, a.deleteRoom},
		{"GET", v2 + "/rooms/{roomId}/delete_status", admin, a.deleteStatusOfRoom},
		{"GET", v2 + "/rooms/delete_status/{deleteId}", admin, a.deleteStatus},
		{"POST", v1 + "/join/{roomId}", admin, a.joinUser},
		{"POST", v1 + "/rooms/{roomId}/make_room_admin", admin, a.makeRoomAdmin},
		{"GET", v1 + "/rooms/{roomId}/forward_extremities", admin, a.forwardExtremities},
		{"GET", v1 + "/rooms/{roomId}/messages", admin, a.roomMessages},
		{"GET", v1 + "/rooms/{roomId}/context/{eventId}", admin, a.roomEventContext},
		{"GET", v1 + "/rooms/{roomId}/timestamp_to_event", admin, a.roomTimestampToEvent},
		{"GET", v1 + "/rooms/{roomId}/hierarchy", admin, a.roomHierarchy},
		{"GET", v1 + "/fetch_event/{eventId}", admin, a.fetchEvent},

		// Registration tokens.
		{"GET", v1 + "/registration_tokens", admin, a.listRegistrationTokens},
		{"POST", v1 + "/registration_tokens/new", admin, a.newRegistrationToken},
		{"GET", v1 + "/registration_tokens/{token}", admin, a.getRegistrationToken},
		{"PUT", v1 + "/registration_tokens/{token}", admin, a.updateRegistrationToken},
		{"DELETE", v1 + "/registration_tokens/{token}", admin, a.deleteRegistrationToken},

		// Media.
		{"POST", v1 + "/media/quarantine/{serverName}/{mediaId}", admin, a.adminQuarantineMedia(true)},
		{"POST", v1 + "/media/unquarantine/{serverName}/{mediaId}", admin, a.adminQuarantineMedia(false)},
		{"DELETE", v1 + "/media/{serverName}/{mediaId}", admin, a.adminDeleteMedia},
		{"GET", v1 + "/media/{serverName}/{mediaId}", admin, a.mediaInfo},
		{"POST", v1 + "/media/protect/{mediaId}", admin, a.protectMedia(true)},
		{"POST", v1 + "/media/unprotect/{mediaId}", admin, a.protectMedia(false)},
		{"GET", v1 + "/room/{roomId}/media", admin, a.listRoomMedia},
		{"POST", v1 + "/room/{roomId}/media/quarantine", admin, a.quarantineRoomMedia},
		{"POST", v1 + "/quarantine_media/{roomId}", admin, a.quarantineRoomMedia},
		{"POST", v1 + "/user/{userId}/media/quarantine", admin, a.quarantineUserMedia},
		{"POST", v1 + "/media/delete", admin, a.deleteMediaByDateSize},
		{"POST", v1 + "/media/{serverName}/delete", admin, a.deleteMediaByDateSize},
		{"DELETE", v1 + "/users/{userId}/media", admin, a.deleteUserMedia},
		{"POST", v1 + "/purge_media_cache", admin, a.purgeMediaCache},
		{"GET", v1 + "/media/quarantine_changes", admin, a.quarantineChanges},

		// Event reports.
		{"GET", v1 + "/event_reports", admin, a.listEventReports},
		{"GET", v1 + "/event_reports/{reportId}", admin, a.getEventReport},
		{"DELETE", v1 + "/event_reports/{reportId}", admin, a.deleteEventReport},

		// Background tasks.
		{"POST", v1 + "/user/{userId}/redact", admin, a.redactUser},
		{"GET", v1 + "/user/redact_status/{redactId}", admin, a.redactStatus},
		{"POST", v1 + "/purge_history/{roomId}", admin, a.purgeHistory},
		{"POST", v1 + "/purge_history/{roomId}/{eventId}", admin, a.purgeHistory},
		{"GET", v1 + "/purge_history_status/{purgeId}", admin, a.purgeStatus},
		{"GET", v1 + "/scheduled_tasks", admin, a.scheduledTasks},

		// Federation.
		{"GET", v1 + "/federation/destinations", admin, a.listDestinations},
		{"GET", v1 + "/federation/destinations/{destination}", admin, a.getDestination},
		{"GET", v1 + "/federation/destinations/{destination}/rooms", admin, a.destinationRooms},
		{"POST", v1 + "/federation/destinations/{destination}/reset_connection", admin, a.resetDestination},

		// User reports.
		{"GET", v1 + "/user_reports", admin, a.listUserReports},
		{"GET", v1 + "/user_reports/{reportId}", admin, a.getUserReport},
		{"DELETE", v1 + "/user_reports/{reportId}", admin, a.deleteUserReport},

		// Statistics.
		{"GET", v1 + "/statistics/users/media", admin, a.userMediaStatistics},
		{"GET", v1 + "/statistics/database/rooms", admin, a.largestRooms},
	}
}

// Routes registers every admin API endpoint on r (the client listener).
func (a *API) Routes(r chi.Router) {
	for _, rt := range a.routes() {
		r.Method(rt.method, rt.path, a.serve(rt))
	}
}

// serve is the one adapter between HTTP and a handler: it checks the
// route's access, runs the handler and writes its result or error.
func (a *API) serve(rt route) http.HandlerFunc {
	auth := func(*http.Request) (accounts.Caller, error) { return accounts.Caller{}, nil }
	if rt.access == admin {
		auth = a.accounts.AuthenticateAdmin
	}
	return mxhttp.Serve(auth, rt.h)
}
