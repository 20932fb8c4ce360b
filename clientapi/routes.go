package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// handler is an endpoint of the client API: it returns the response body
// or a Matrix error, and mxhttp.Respond writes either. c is the
// authenticated caller, zero for public routes.
type handler func(r *http.Request, c accounts.Caller) (any, error)

// access is what a route needs before its handler runs.
type access int

const (
	public  access = iota // nothing: the handler may look at the token itself
	user                  // a valid access token
	admin                 // a valid access token of a server admin
	anyUser               // a valid access token, even of a locked account (logout)
	active                // a valid access token of an account that is not suspended
)

type route struct {
	method string
	path   string
	access access
	h      handler
}

// Path prefixes. Endpoints under v3 that existed before v3 also answer
// under r0, which older clients and tools still call (see Routes).
const (
	v1       = "/_matrix/client/v1"
	v3       = "/_matrix/client/v3"
	r0       = "/_matrix/client/r0"
	mediaV1  = "/_matrix/media/v1"
	mediaV3  = "/_matrix/media/v3"
	synapse  = "/_synapse/admin/v1"
	msc3391  = "/_matrix/client/unstable/org.matrix.msc3391"
	tagsPath = "/user/{userId}/rooms/{roomId}/tags"
	ruleBase = "/pushrules/global/{kind}/{ruleId}"
)

// v3Only are the v3 endpoints added after r0 was retired: no r0 alias.
var v3Only = map[string]bool{v3 + "/refresh": true, v3 + "/users/{userId}/report": true}

// routes is every endpoint of the client-server API (and the Synapse admin
// endpoints Hearth serves next to it), grouped by spec module.
func (a *API) routes() []route {
	return []route{
		// Server discovery, versions, capabilities.
		{"GET", "/.well-known/matrix/client", public, a.wellKnownClient},
		{"GET", "/.well-known/matrix/server", public, a.wellKnownServer},
		{"GET", "/.well-known/matrix/policy_server", public, a.wellKnownPolicyServer},
		{"GET", "/_matrix/client/versions", public, a.versions},
		{"GET", v3 + "/capabilities", user, a.capabilities},

		// Login, logout, refresh.
		{"GET", v3 + "/login", public, a.loginFlows},
		{"POST", v3 + "/login", public, a.login},
		{"POST", v3 + "/refresh", public, a.refresh},
		{"POST", v1 + "/refresh", public, a.refresh},
		{"POST", v3 + "/logout", anyUser, a.logout},
		{"POST", v3 + "/logout/all", anyUser, a.logoutAll},
		{"GET", v3 + "/account/whoami", user, a.whoami},
		{"POST", v1 + "/login/get_token", user, a.getLoginToken},

		// Account registration and management.
		{"POST", v3 + "/register", public, a.register},
		{"GET", v3 + "/register/available", public, a.registerAvailable},
		{"GET", v1 + "/register/m.login.registration_token/validity", public, a.registrationTokenValidity},
		{"POST", v3 + "/account/password", public, a.postPassword},
		{"POST", v3 + "/account/deactivate", user, a.deactivate},
		{"GET", v3 + "/account/3pid", user, a.threePIDs},
		{"POST", v3 + "/account/3pid/add", user, a.addThreePID},
		{"POST", v3 + "/account/3pid/delete", active, a.deleteThreePID}, // suspended: no removing (v1.13)
		{"POST", v3 + "/account/3pid/unbind", user, a.unbindThreePID},
		{"POST", v3 + "/account/3pid/email/requestToken", public, a.addEmailToken},
		{"POST", v3 + "/account/3pid/msisdn/requestToken", public, a.msisdnToken},
		{"POST", v3 + "/account/password/email/requestToken", public, a.passwordEmailToken},
		{"POST", v3 + "/account/password/msisdn/requestToken", public, a.msisdnToken},
		{"POST", v3 + "/register/email/requestToken", public, a.registerEmailToken},
		{"POST", v3 + "/register/msisdn/requestToken", public, a.msisdnToken},

		// Device management.
		{"GET", v3 + "/devices", user, a.listDevices},
		{"GET", v3 + "/devices/{deviceID}", user, a.getDevice},
		{"PUT", v3 + "/devices/{deviceID}", user, a.putDevice},
		{"DELETE", v3 + "/devices/{deviceID}", user, a.deleteDevice},
		{"POST", v3 + "/delete_devices", user, a.deleteDevices},

		// Profiles.
		{"GET", v3 + "/profile/{userId}", public, a.getProfile},
		{"GET", v3 + "/profile/{userId}/{keyName}", public, a.getProfileField},
		{"PUT", v3 + "/profile/{userId}/{keyName}", active, a.putProfileField},
		{"DELETE", v3 + "/profile/{userId}/{keyName}", active, a.deleteProfileField},

		// Client config (account data), MSC3391 deletion, room tagging.
		{"GET", v3 + "/user/{userId}/account_data/{type}", user, a.getAccountData},
		{"PUT", v3 + "/user/{userId}/account_data/{type}", user, a.putAccountData},
		{"GET", v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", user, a.getAccountData},
		{"PUT", v3 + "/user/{userId}/rooms/{roomId}/account_data/{type}", user, a.putAccountData},
		{"DELETE", msc3391 + "/user/{userId}/account_data/{type}", user, a.deleteAccountData},
		{"DELETE", msc3391 + "/user/{userId}/rooms/{roomId}/account_data/{type}", user, a.deleteAccountData},
		{"GET", v3 + tagsPath, user, a.getTags},
		{"PUT", v3 + tagsPath + "/{tag}", user, a.putTag},
		{"DELETE", v3 + tagsPath + "/{tag}", user, a.deleteTag},

		// Filtering.
		{"POST", v3 + "/user/{userId}/filter", user, a.postFilter},
		{"GET", v3 + "/user/{userId}/filter/{filterId}", user, a.getFilter},

		// Push notifications: rules, pushers, notifications.
		{"GET", v3 + "/pushrules", user, a.getPushRules},
		{"GET", v3 + "/pushrules/", user, a.getPushRules},
		{"GET", v3 + "/pushrules/global", user, a.getGlobalPushRules},
		{"GET", v3 + "/pushrules/global/", user, a.getGlobalPushRules},
		{"GET", v3 + ruleBase, user, a.getPushRuleHandler},
		{"PUT", v3 + ruleBase, user, a.putPushRule},
		{"DELETE", v3 + ruleBase, user, a.deletePushRule},
		{"GET", v3 + ruleBase + "/enabled", user, a.getPushRuleEnabled},
		{"PUT", v3 + ruleBase + "/enabled", user, a.putPushRuleEnabled},
		{"GET", v3 + ruleBase + "/actions", user, a.getPushRuleActions},
		{"PUT", v3 + ruleBase + "/actions", user, a.putPushRuleActions},
		{"GET", v3 + "/pushers", user, a.getPushers},
		{"POST", v3 + "/pushers/set", user, a.setPusher},
		{"GET", v3 + "/notifications", user, a.getNotifications},

		// OpenID.
		{"POST", v3 + "/user/{userId}/openid/request_token", user, a.requestOpenIDToken},

		// Voice over IP, third-party networks.
		{"GET", v3 + "/voip/turnServer", user, a.turnServer},
		{"GET", v3 + "/thirdparty/protocols", user, a.thirdPartyProtocols},
		{"GET", v3 + "/thirdparty/protocol/{protocol}", user, a.thirdPartyProtocol},
		{"GET", v3 + "/thirdparty/location/{protocol}", user, a.thirdPartyLookup("location")},
		{"GET", v3 + "/thirdparty/user/{protocol}", user, a.thirdPartyLookup("user")},
		{"GET", v3 + "/thirdparty/location", user, a.thirdPartyReverseLookup("location", "alias")},
		{"GET", v3 + "/thirdparty/user", user, a.thirdPartyReverseLookup("user", "userid")},

		// Syncing, search, presence, typing, receipts, read markers.
		{"GET", v3 + "/sync", user, a.sync},
		// Simplified sliding sync (MSC4186): the unstable dialect clients
		// speak today and v4; one implementation (sliding_sync.go).
		{"POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", user, a.slidingSyncUnstable},
		{"POST", "/_matrix/client/v4/sync", user, a.slidingSyncV4},
		{"POST", v3 + "/search", user, a.search},
		{"GET", v3 + "/presence/{userId}/status", user, a.getPresence},
		{"PUT", v3 + "/presence/{userId}/status", user, a.putPresence},
		{"PUT", v3 + "/rooms/{roomId}/typing/{userId}", user, a.putTyping},
		{"POST", v3 + "/rooms/{roomId}/receipt/{receiptType}/{eventId}", user, a.postReceipt},
		{"POST", v3 + "/rooms/{roomId}/read_markers", user, a.postReadMarkers},

		// Rooms: creation, events, state.
		{"POST", v3 + "/createRoom", active, a.createRoom},
		{"GET", v3 + "/joined_rooms", user, a.joinedRooms},
		{"PUT", v3 + "/rooms/{roomId}/send/{eventType}/{txnId}", user, a.sendMessage},
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}", user, a.putState},
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}/", user, a.putState}, // empty state key
		{"PUT", v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", user, a.putState},
		{"POST", msc4140 + "/delayed_events/{delayId}/{action}", public, a.delayedEventAction},
		{"GET", msc4140 + "/delayed_events", user, a.listDelayedEvents},
		{"GET", msc4140 + "/delayed_events/{delayId}", user, a.getDelayedEvent},

		// MatrixRTC: transports (MSC4143) and the LiveKit authorization
		// service (MSC4195), public: the OpenID token in the body is the
		// credential, and remote users call it too.
		{"GET", msc4143 + "/rtc/transports", user, a.getRTCTransports},
		{"POST", liveKitService + "/get_token", public, a.liveKitGetToken},
		{"POST", liveKitService + "/sfu/get", public, a.liveKitLegacyToken},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}", user, a.getState},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}/", user, a.getState},
		{"GET", v3 + "/rooms/{roomId}/state/{eventType}/{stateKey}", user, a.getState},
		{"GET", v3 + "/rooms/{roomId}/state", user, a.getAllState},
		{"GET", v3 + "/rooms/{roomId}/event/{eventId}", user, a.getEvent},
		{"PUT", v3 + "/rooms/{roomId}/redact/{eventId}/{txnId}", user, a.redact},
		{"GET", v3 + "/rooms/{roomId}/messages", user, a.messages},
		{"GET", v3 + "/rooms/{roomId}/context/{eventId}", user, a.eventContext},
		{"GET", v3 + "/rooms/{roomId}/members", user, a.members},
		{"GET", v3 + "/rooms/{roomId}/joined_members", user, a.joinedMembers},
		{"GET", v1 + "/rooms/{roomId}/timestamp_to_event", user, a.timestampToEvent},

		// Room membership.
		{"POST", v3 + "/rooms/{roomId}/join", user, a.joinRoomByID},
		{"POST", v3 + "/join/{roomIdOrAlias}", user, a.joinRoomByIDOrAlias},
		{"POST", v3 + "/knock/{roomIdOrAlias}", active, a.knock},
		{"POST", v3 + "/rooms/{roomId}/invite", active, a.invite},
		{"POST", v3 + "/rooms/{roomId}/leave", user, a.leave},
		{"POST", v3 + "/rooms/{roomId}/forget", user, a.forget},
		{"POST", v3 + "/rooms/{roomId}/kick", active, a.kick},
		{"POST", v3 + "/rooms/{roomId}/ban", active, a.ban},
		{"POST", v3 + "/rooms/{roomId}/unban", active, a.unban},

		// Room aliases and the room directory.
		{"PUT", v3 + "/directory/room/{roomAlias}", user, a.putAlias},
		{"GET", v3 + "/directory/room/{roomAlias}", public, a.getAlias},
		{"DELETE", v3 + "/directory/room/{roomAlias}", user, a.deleteAlias},
		{"GET", v3 + "/rooms/{roomId}/aliases", user, a.roomAliases},
		{"GET", v3 + "/directory/list/room/{roomId}", public, a.getRoomVisibility},
		{"PUT", v3 + "/directory/list/room/{roomId}", user, a.putRoomVisibility},
		{"GET", v3 + "/publicRooms", public, a.getPublicRooms},
		{"POST", v3 + "/publicRooms", user, a.postPublicRooms},

		// Relations, threads, upgrades, summaries, spaces, reporting, the
		// user directory and mutual rooms.
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}", user, a.relations},
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}/{relType}", user, a.relations},
		{"GET", v1 + "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", user, a.relations},
		{"GET", v1 + "/rooms/{roomId}/threads", user, a.threads},
		{"PUT", msc4306 + "/rooms/{roomId}/thread/{eventId}/subscription", user, a.putThreadSubscription},
		{"GET", msc4306 + "/rooms/{roomId}/thread/{eventId}/subscription", user, a.getThreadSubscription},
		{"DELETE", msc4306 + "/rooms/{roomId}/thread/{eventId}/subscription", user, a.deleteThreadSubscription},
		{"GET", msc4308 + "/thread_subscriptions", user, a.threadSubscriptions},
		{"POST", v3 + "/rooms/{roomId}/upgrade", active, a.upgradeRoom},
		{"GET", v1 + "/room_summary/{roomIdOrAlias}", public, a.getRoomSummary},
		{"GET", v1 + "/rooms/{roomId}/hierarchy", user, a.hierarchy},
		{"POST", v3 + "/rooms/{roomId}/report/{eventId}", user, a.reportEvent},
		{"POST", v3 + "/rooms/{roomId}/report", user, a.reportRoom},
		{"POST", v3 + "/users/{userId}/report", user, a.reportUser},
		{"POST", v3 + "/user_directory/search", user, a.searchUserDirectory},
		{"GET", v1 + "/mutual_rooms", user, a.mutualRooms},

		// End-to-end encryption: keys, cross-signing, to-device, backup.
		{"POST", v3 + "/keys/upload", user, a.uploadKeys},
		{"POST", v3 + "/keys/query", user, a.queryKeys},
		{"POST", v3 + "/keys/claim", user, a.claimKeys},
		{"GET", v3 + "/keys/changes", user, a.keyChanges},
		{"POST", v3 + "/keys/device_signing/upload", user, a.uploadCrossSigningKeys},
		{"POST", v3 + "/keys/signatures/upload", user, a.uploadSignatures},
		{"PUT", v3 + "/sendToDevice/{eventType}/{txnId}", user, a.sendToDevice},
		{"POST", v3 + "/room_keys/version", user, a.createBackup},
		{"GET", v3 + "/room_keys/version", user, a.getBackup},
		{"GET", v3 + "/room_keys/version/{version}", user, a.getBackup},
		{"PUT", v3 + "/room_keys/version/{version}", user, a.updateBackup},
		{"DELETE", v3 + "/room_keys/version/{version}", user, a.deleteBackup},
		{"PUT", v3 + "/room_keys/keys", user, a.putBackupKeys},
		{"PUT", v3 + "/room_keys/keys/{roomId}", user, a.putBackupKeys},
		{"PUT", v3 + "/room_keys/keys/{roomId}/{sessionId}", user, a.putBackupKeys},
		{"GET", v3 + "/room_keys/keys", user, a.getBackupKeys},
		{"GET", v3 + "/room_keys/keys/{roomId}", user, a.getBackupKeys},
		{"GET", v3 + "/room_keys/keys/{roomId}/{sessionId}", user, a.getBackupKeys},
		{"DELETE", v3 + "/room_keys/keys", user, a.deleteBackupKeys},
		{"DELETE", v3 + "/room_keys/keys/{roomId}", user, a.deleteBackupKeys},
		{"DELETE", v3 + "/room_keys/keys/{roomId}/{sessionId}", user, a.deleteBackupKeys},
		// Dehydrated devices (MSC3814).
		{"PUT", msc3814Prefix + "/dehydrated_device", user, a.putDehydratedDevice},
		{"GET", msc3814Prefix + "/dehydrated_device", user, a.getDehydratedDevice},
		{"DELETE", msc3814Prefix + "/dehydrated_device", user, a.deleteDehydratedDevice},
		{"POST", msc3814Prefix + "/dehydrated_device/{deviceId}/events", user, a.dehydratedDeviceEvents},

		// Application services.
		{"POST", v1 + "/appservice/{appserviceId}/ping", user, a.pingAppService},

		// Content repository. config and preview_url always needed a token;
		// the v3 download and thumbnail are deprecated since v1.11.
		{"POST", mediaV3 + "/upload", user, a.mediaUpload},
		{"POST", mediaV1 + "/create", user, a.mediaCreate},
		{"PUT", mediaV3 + "/upload/{serverName}/{mediaId}", user, a.mediaUploadTo},
		{"GET", v1 + "/media/config", user, a.mediaConfig},
		{"GET", v1 + "/media/download/{serverName}/{mediaId}", user, a.mediaDownload},
		{"GET", v1 + "/media/download/{serverName}/{mediaId}/{fileName}", user, a.mediaDownload},
		{"GET", v1 + "/media/thumbnail/{serverName}/{mediaId}", user, a.mediaThumbnail},
		{"GET", v1 + "/media/preview_url", user, a.mediaPreview},
		{"GET", mediaV3 + "/config", user, a.mediaConfig},
		{"GET", mediaV3 + "/preview_url", user, a.mediaPreview},
		{"GET", mediaV3 + "/download/{serverName}/{mediaId}", public, a.legacyMediaDownload},
		{"GET", mediaV3 + "/download/{serverName}/{mediaId}/{fileName}", public, a.legacyMediaDownload},
		{"GET", mediaV3 + "/thumbnail/{serverName}/{mediaId}", public, a.legacyMediaThumbnail},

		// Server administration (the spec's endpoints): account locking
		// and suspension.
		{"GET", v1 + "/admin/lock/{userId}", admin, a.getAccountLock},
		{"PUT", v1 + "/admin/lock/{userId}", admin, a.putAccountLock},
		{"GET", v1 + "/admin/suspend/{userId}", admin, a.getAccountSuspension},
		{"PUT", v1 + "/admin/suspend/{userId}", admin, a.putAccountSuspension},

		// Synapse-compatible administration: server notices here, as they
		// share the notices room with the client API; the rest of
		// /_synapse/admin is package admin's.
		{"POST", synapse + "/send_server_notice", admin, a.sendServerNotice},
		{"PUT", synapse + "/send_server_notice/{txnId}", admin, a.sendServerNotice},
	}
}

// sharedSecretRoutes answer only while a registration shared secret is
// configured (it reloads): without one the endpoint does not exist (404
// M_UNRECOGNIZED, as for an unknown path), as Complement and Synapse
// expect.
func (a *API) sharedSecretRoutes() []route {
	return []route{
		{"GET", synapse + "/register", public, a.withSharedSecret(a.adminRegisterNonce)},
		{"POST", synapse + "/register", public, a.withSharedSecret(a.adminRegister)},
	}
}

// bodyLimits are the routes whose request body has another limit than
// max_request_bytes (every JSON body is held in memory whole): uploads
// stream to disk and may be up to max_upload_bytes. Event content has its
// own limit, checked as it is read (readContent).
func (a *API) bodyLimits() map[string]int64 {
	return map[string]int64{
		"POST " + mediaV3 + "/upload":                       a.conf().MaxUploadBytes,
		"PUT " + mediaV3 + "/upload/{serverName}/{mediaId}": a.conf().MaxUploadBytes,
	}
}

// Routes registers every client API endpoint on r.
func (a *API) Routes(r chi.Router) {
	rs := append(a.routes(), a.sharedSecretRoutes()...)
	// The page the link in a validation mail opens (threepid.go): HTML,
	// not the JSON of the API.
	r.Get(emailValidatePath, a.emailValidatePage)
	r.Post(emailValidatePath, a.emailValidateSubmit)
	limits := a.bodyLimits()
	for _, rt := range rs {
		var h http.Handler = a.serve(rt)
		if n, ok := limits[rt.method+" "+rt.path]; ok {
			h = mxhttp.LimitBody(n)(h)
		}
		r.Method(rt.method, rt.path, h)
		if len(rt.path) > len(v3) && rt.path[:len(v3)] == v3 && !v3Only[rt.path] {
			r.Method(rt.method, r0+rt.path[len(v3):], h)
		}
	}
}

// serve is the one adapter between HTTP and a handler: it checks the
// route's access, runs the handler and writes its result or error.
func (a *API) serve(rt route) http.HandlerFunc {
	auth := func(*http.Request) (accounts.Caller, error) { return accounts.Caller{}, nil }
	switch rt.access {
	case user:
		auth = a.accounts.Authenticate
	case admin:
		auth = a.accounts.AuthenticateAdmin
	case anyUser:
		auth = a.accounts.AuthenticateLocked
	case active:
		auth = func(r *http.Request) (accounts.Caller, error) {
			c, err := a.accounts.Authenticate(r)
			if err == nil && c.Suspended {
				return accounts.Caller{}, accounts.ErrSuspended()
			}
			return c, err
		}
	}
	return mxhttp.Serve(auth, rt.h)
}
