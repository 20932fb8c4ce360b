package admin_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// synapseAdminAPI is every method-and-path pair that Synapse's
// register_servlets and register_servlets_for_media_repo
// (synapse/rest/admin/__init__.py and media.py, element-hq/synapse
// a58ad44eb0) register under /_synapse/admin: 102 pairs. The issue
// counted 101 on an older Synapse. Path parameters are written as
// {user}, {room}, {event}, {media}, {server} and filled in by the probe.
var synapseAdminAPI = []struct{ method, path string }{
	// rooms.py
	{"GET", "/v1/rooms/{room}"},
	{"DELETE", "/v1/rooms/{room}"},
	{"GET", "/v1/rooms/{room}/block"},
	{"PUT", "/v1/rooms/{room}/block"},
	{"GET", "/v1/rooms"},
	{"GET", "/v1/rooms/{room}/state"},
	{"DELETE", "/v2/rooms/{room}"},
	{"GET", "/v1/rooms/{room}/members"},
	{"GET", "/v2/rooms/delete_status/unknown-delete-id"},
	{"GET", "/v2/rooms/{room}/delete_status"},
	{"POST", "/v1/join/{room}"},
	{"POST", "/v1/rooms/{room}/make_room_admin"},
	{"DELETE", "/v1/rooms/{room}/forward_extremities"},
	{"GET", "/v1/rooms/{room}/forward_extremities"},
	{"GET", "/v1/rooms/{room}/context/{event}"},
	{"GET", "/v1/rooms/{room}/messages"},
	{"GET", "/v1/rooms/{room}/timestamp_to_event"},
	{"GET", "/v1/rooms/{room}/hierarchy"},
	{"GET", "/v1/purge_history_status/unknown-purge-id"},
	{"POST", "/v1/purge_history/{room}"}, // and /purge_history/{room}/{event}: one pattern
	// __init__.py
	{"GET", "/v1/server_version"},
	// users.py
	{"GET", "/v2/users/{user}"},
	{"PUT", "/v2/users/{user}"},
	{"GET", "/v2/users"},
	{"GET", "/v3/users"},
	{"GET", "/v1/users/{user}/admin"},
	{"PUT", "/v1/users/{user}/admin"},
	{"GET", "/v1/users/{user}/joined_rooms"},
	{"GET", "/v1/users/{user}/memberships"},
	{"POST", "/v1/users/{user}/login"},
	{"GET", "/v1/users/{user}/accountdata"},
	{"GET", "/v1/users/{user}/pushers"},
	{"POST", "/v1/users/{user}/shadow_ban"},
	{"DELETE", "/v1/users/{user}/shadow_ban"},
	{"GET", "/v1/users/{user}/override_ratelimit"},
	{"POST", "/v1/users/{user}/override_ratelimit"},
	{"DELETE", "/v1/users/{user}/override_ratelimit"},
	{"POST", "/v1/users/{user}/_allow_cross_signing_replacement_without_uia"},
	{"GET", "/v1/auth_providers/oidc/users/someone"},
	{"GET", "/v1/threepid/email/users/someone@example.org"},
	{"POST", "/v1/user/{user}/redact"},
	{"GET", "/v1/user/redact_status/unknown-redact-id"},
	{"GET", "/v1/users/{user}/sent_invite_count"},
	{"GET", "/v1/users/{user}/cumulative_joined_room_count"},
	{"GET", "/v1/whois/{user}"},
	{"POST", "/v1/deactivate/{other}"},
	{"POST", "/v1/reset_password/{other}"},
	{"GET", "/v1/search_users/{user}"},
	{"GET", "/v1/register"},
	{"POST", "/v1/register"},
	{"POST", "/v1/account_validity/validity"},
	{"PUT", "/v1/suspend/{other}"},
	// username_available.py
	{"GET", "/v1/username_available?username=probe"},
	// statistics.py
	{"GET", "/v1/statistics/users/media"},
	{"GET", "/v1/statistics/database/rooms"},
	// event_reports.py, user_reports.py
	{"GET", "/v1/event_reports/1"},
	{"DELETE", "/v1/event_reports/1"},
	{"GET", "/v1/event_reports"},
	{"GET", "/v1/user_reports"},
	{"GET", "/v1/user_reports/1"},
	{"DELETE", "/v1/user_reports/1"},
	// registration_tokens.py
	{"GET", "/v1/registration_tokens"},
	{"POST", "/v1/registration_tokens/new"},
	{"GET", "/v1/registration_tokens/abcd"},
	{"PUT", "/v1/registration_tokens/abcd"},
	{"DELETE", "/v1/registration_tokens/abcd"},
	// federation.py
	{"GET", "/v1/federation/destinations/remote.test/rooms"},
	{"POST", "/v1/federation/destinations/remote.test/reset_connection"},
	{"GET", "/v1/federation/destinations/remote.test"},
	{"GET", "/v1/federation/destinations"},
	// devices.py
	{"GET", "/v2/users/{user}/devices/NODEVICE"},
	{"DELETE", "/v2/users/{user}/devices/NODEVICE"},
	{"PUT", "/v2/users/{user}/devices/NODEVICE"},
	{"GET", "/v2/users/{user}/devices"},
	{"POST", "/v2/users/{user}/devices"},
	{"POST", "/v2/users/{user}/delete_devices"},
	// server_notice_servlet.py
	{"POST", "/v1/send_server_notice"},
	{"PUT", "/v1/send_server_notice/txn1"},
	// background_updates.py
	{"GET", "/v1/background_updates/enabled"},
	{"POST", "/v1/background_updates/enabled"},
	{"GET", "/v1/background_updates/status"},
	{"POST", "/v1/background_updates/start_job"},
	// experimental_features.py
	{"GET", "/v1/experimental_features/{user}"},
	{"PUT", "/v1/experimental_features/{user}"},
	// scheduled_tasks.py
	{"GET", "/v1/scheduled_tasks"},
	// events.py
	{"GET", "/v1/fetch_event/{event}"},
	// media.py
	{"POST", "/v1/purge_media_cache?before_ts=0"},
	{"POST", "/v1/room/{room}/media/quarantine"},
	{"POST", "/v1/quarantine_media/{room}"},
	{"POST", "/v1/media/quarantine/{server}/{media}"},
	{"POST", "/v1/media/unquarantine/{server}/{media}"},
	{"POST", "/v1/user/{user}/media/quarantine"},
	{"GET", "/v1/media/quarantine_changes"},
	{"POST", "/v1/media/protect/{media}"},
	{"POST", "/v1/media/unprotect/{media}"},
	{"GET", "/v1/room/{room}/media"},
	{"POST", "/v1/media/delete?before_ts=0"},
	{"POST", "/v1/media/{server}/delete?before_ts=0"},
	{"DELETE", "/v1/media/{server}/nosuchmedia"},
	{"GET", "/v1/users/{user}/media"},
	{"DELETE", "/v1/users/{other}/media"},
	{"GET", "/v1/media/{server}/{media}"},
}

// TestSynapseAdminAPIProbe calls every pair of Synapse's admin API on a
// running Hearth with an admin's token and counts those Hearth serves:
// any answer but 404 or 405 M_UNRECOGNIZED (no such endpoint). The issue
// asks for at least 90. Requests go to real rooms, users, events and
// media, so a handler's own answer (200, 400, 404 M_NOT_FOUND) shows.
func TestSynapseAdminAPIProbe(t *testing.T) {
	// The shared-secret registration endpoints exist only with a secret.
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.RegistrationSharedSecret = "probe-secret" })
	admin := newAdmin(t, hs, "admin")
	other := newUser(t, hs, "other")
	room := admin.createRoom(t, map[string]any{"name": "Probe"})
	ev := admin.ok(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/probe1",
		map[string]any{"msgtype": "m.text", "body": "hi"})["event_id"].(string)
	up := hs.Do(t, "POST", "/_matrix/media/v3/upload", admin.token, "probe bytes")
	hearthtest.Expect(t, up, http.StatusOK, "")
	mxc := strings.TrimPrefix(up.JSON["content_uri"].(string), "mxc://")
	server, mediaID, _ := strings.Cut(mxc, "/")

	fill := strings.NewReplacer("{user}", url.PathEscape(admin.id), "{other}", url.PathEscape(other.id),
		"{room}", url.PathEscape(room), "{event}", url.PathEscape(ev), "{server}", server, "{media}", mediaID)
	served := 0
	var missing []string
	for _, p := range synapseAdminAPI {
		var body any
		if p.method == "POST" || p.method == "PUT" {
			body = map[string]any{}
		}
		res := admin.do(t, p.method, "/_synapse/admin"+fill.Replace(p.path), body)
		if (res.Status == http.StatusNotFound || res.Status == http.StatusMethodNotAllowed) && res.ErrCode() == "M_UNRECOGNIZED" {
			missing = append(missing, p.method+" "+p.path)
			continue
		}
		if res.Status >= 500 {
			t.Errorf("%s %s: %d %s", p.method, p.path, res.Status, res.Body)
		}
		served++
	}
	t.Logf("Synapse admin API: %d of %d method-and-path pairs served; missing: %s", served, len(synapseAdminAPI), strings.Join(missing, ", "))
	if len(synapseAdminAPI) != 102 {
		t.Fatalf("the list holds %d pairs, want Synapse's 102", len(synapseAdminAPI))
	}
	if served < 90 {
		t.Fatalf("%d of %d pairs served, want at least 90", served, len(synapseAdminAPI))
	}
}
