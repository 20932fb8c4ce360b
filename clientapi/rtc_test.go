package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/auth"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rtc"
)

const (
	testLKKey    = "hearthkey"
	testLKSecret = "a-test-secret-of-at-least-32-characters"
)

// fakeSFU answers the two RoomService calls the authorization service
// makes (CreateRoom, ListRooms) the way LiveKit's Twirp JSON API does,
// after checking the caller's token is signed with the secret and grants
// what the call needs.
type fakeSFU struct {
	*httptest.Server
	mu    sync.Mutex
	rooms map[string]bool
}

func newFakeSFU(t *testing.T) *fakeSFU {
	f := &fakeSFU{rooms: map[string]bool{}}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := auth.ParseAPIToken(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil || v.APIKey() != testLKKey {
			http.Error(w, `{"code":"unauthenticated","msg":"bad token"}`, http.StatusUnauthorized)
			return
		}
		_, grants, err := v.Verify(testLKSecret)
		if err != nil {
			http.Error(w, `{"code":"unauthenticated","msg":"bad signature"}`, http.StatusUnauthorized)
			return
		}
		var body struct {
			Name  string   `json:"name"`
			Names []string `json:"names"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body)
		w.Header().Set("Content-Type", "application/json")
		f.mu.Lock()
		defer f.mu.Unlock()
		switch r.URL.Path {
		case "/twirp/livekit.RoomService/CreateRoom":
			if !grants.Video.RoomCreate {
				http.Error(w, `{"code":"permission_denied","msg":"no roomCreate"}`, http.StatusForbidden)
				return
			}
			f.rooms[body.Name] = true
			_ = json.NewEncoder(w).Encode(map[string]any{"name": body.Name, "sid": "RM_" + body.Name[:4]})
		case "/twirp/livekit.RoomService/ListRooms":
			if !grants.Video.RoomList {
				http.Error(w, `{"code":"permission_denied","msg":"no roomList"}`, http.StatusForbidden)
				return
			}
			rooms := []map[string]any{}
			for _, n := range body.Names {
				if f.rooms[n] {
					rooms = append(rooms, map[string]any{"name": n})
				}
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"rooms": rooms})
		default:
			http.Error(w, `{"code":"bad_route","msg":"no such method"}`, http.StatusNotFound)
		}
	}))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeSFU) has(room string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rooms[room]
}

// withLiveKit configures a server to use f, with the secret in a file.
func withLiveKit(t *testing.T, f *fakeSFU) func(*config.Config) {
	secretFile := filepath.Join(t.TempDir(), "livekit.secret")
	if err := os.WriteFile(secretFile, []byte(testLKSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.LiveKitURL = "ws://" + strings.TrimPrefix(f.URL, "http://")
		c.LiveKitAPIKey = testLKKey
		c.LiveKitAPISecretFile = secretFile
		c.WellKnownClient = "https://matrix.example.org"
	}
}

// deviceOf is the device of an access token.
func deviceOf(t *testing.T, s *hearthtest.Server, token string) string {
	t.Helper()
	r := s.Do(t, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["device_id"].(string)
}

// openIDToken asks s for an OpenID token of the user.
func openIDToken(t *testing.T, s *hearthtest.Server, userID, token string) map[string]any {
	t.Helper()
	r := s.Do(t, "POST", "/_matrix/client/v3/user/"+url.PathEscape(userID)+"/openid/request_token", token, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON
}

// verifyJWT checks a LiveKit access token against the secret and returns
// its identity and video grant.
func verifyJWT(t *testing.T, jwt string) (string, *auth.VideoGrant, time.Time) {
	t.Helper()
	v, err := auth.ParseAPIToken(jwt)
	if err != nil {
		t.Fatalf("parsing the JWT: %v", err)
	}
	if v.APIKey() != testLKKey {
		t.Fatalf("JWT issuer %q", v.APIKey())
	}
	if _, _, err := v.Verify("another secret"); err == nil {
		t.Fatal("the JWT verifies with another secret")
	}
	claims, grants, err := v.Verify(testLKSecret)
	if err != nil {
		t.Fatalf("verifying the JWT: %v", err)
	}
	return grants.Identity, grants.Video, claims.ExpiresAt.Time
}

func TestRTCTransports(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		// Without LiveKit: no transports, nothing in the well-known.
		s := hearthtest.NewServer(t, b, func(c *config.Config) { c.WellKnownClient = "https://matrix.example.org" })
		_, tok := s.RegisterUser(t, "alice")
		r := s.Do(t, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if string(r.Body) != `{"rtc_transports":[]}` {
			t.Fatalf("transports without LiveKit: %s", r.Body)
		}
		r = s.Do(t, "GET", "/.well-known/matrix/client", "", nil)
		if strings.Contains(string(r.Body), "rtc_foci") {
			t.Fatalf("well-known without LiveKit: %s", r.Body)
		}
		r = s.Do(t, "POST", "/_hearth/livekit/get_token", "", map[string]any{})
		hearthtest.Expect(t, r, http.StatusNotFound, "M_UNRECOGNIZED")

		// With LiveKit.
		s = hearthtest.NewServer(t, b, withLiveKit(t, newFakeSFU(t)))
		_, tok = s.RegisterUser(t, "alice")
		r = s.Do(t, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", "", nil)
		hearthtest.Expect(t, r, http.StatusUnauthorized, "M_MISSING_TOKEN")
		r = s.Do(t, "GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		want := `[{"livekit_service_url":"https://matrix.example.org/_hearth/livekit","type":"livekit"}]`
		if got, _ := json.Marshal(r.JSON["rtc_transports"]); string(got) != want {
			t.Fatalf("transports: %s", r.Body)
		}
		r = s.Do(t, "GET", "/.well-known/matrix/client", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if got, _ := json.Marshal(r.JSON["org.matrix.msc4143.rtc_foci"]); string(got) != want {
			t.Fatalf("well-known: %s", r.Body)
		}
		r = s.Do(t, "GET", "/_matrix/client/versions", "", nil)
		if !strings.Contains(string(r.Body), `"org.matrix.msc4143":true`) {
			t.Fatalf("versions: %s", r.Body)
		}
	})
}

// The MSC4195 hashes match the MSC's test vectors.
func TestLiveKitHashes(t *testing.T) {
	if got := rtc.RoomAlias("!roomid:example.com", "slot1234"); got != "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc" {
		t.Errorf("room alias %s", got)
	}
	if got := rtc.Identity("@alice:example.com", "DEVICE123", "memberABC"); got != "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU" {
		t.Errorf("identity %s", got)
	}
}

func TestLiveKitGetTokenLocal(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		sfu := newFakeSFU(t)
		s := hearthtest.NewServer(t, b, withLiveKit(t, sfu))
		alice, aliceTok := s.RegisterUser(t, "alice")
		bob, bobTok := s.RegisterUser(t, "bob")
		r := s.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		device := deviceOf(t, s, aliceTok)
		oid := openIDToken(t, s, alice, aliceTok)
		request := func(oid map[string]any, user, device string) map[string]any {
			return map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
				"member": map[string]any{"id": "member1", "claimed_user_id": user, "claimed_device_id": device}}
		}

		r = s.Do(t, "POST", "/_hearth/livekit/get_token", "", request(oid, alice, device))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["url"] != s.Config.LiveKitURL {
			t.Fatalf("url: %s", r.Body)
		}
		identity, grant, exp := verifyJWT(t, r.JSON["jwt"].(string))
		alias := rtc.RoomAlias(roomID, "m.call#ROOM")
		if identity != rtc.Identity(alice, device, "member1") || grant.Room != alias {
			t.Fatalf("identity %q room %q", identity, grant.Room)
		}
		if !grant.RoomJoin || !grant.RoomCreate || !grant.GetCanPublish() || !grant.GetCanSubscribe() || !grant.GetCanPublishData() {
			t.Fatalf("full-access grant: %+v", grant)
		}
		if grant.RoomAdmin || grant.RoomList || grant.RoomRecord {
			t.Fatalf("grant gives more than joining: %+v", grant)
		}
		if d := time.Until(exp); d <= 0 || d > 20*time.Minute {
			t.Fatalf("token valid for %v", d)
		}
		if !sfu.has(alias) {
			t.Fatal("the LiveKit room was not created")
		}

		// The legacy endpoint: slot m.call#ROOM, identity user:device.
		r = s.Do(t, "POST", "/_hearth/livekit/sfu/get", "", map[string]any{"room": roomID, "openid_token": oid, "device_id": device})
		hearthtest.Expect(t, r, http.StatusOK, "")
		identity, grant, _ = verifyJWT(t, r.JSON["jwt"].(string))
		if identity != alice+":"+device || grant.Room != alias || !grant.RoomCreate {
			t.Fatalf("legacy: identity %q grant %+v", identity, grant)
		}

		noJWT := func(r hearthtest.Response, status int, errcode string) {
			t.Helper()
			hearthtest.Expect(t, r, status, errcode)
			if _, ok := r.JSON["jwt"]; ok {
				t.Fatalf("a JWT with an error: %s", r.Body)
			}
		}
		// A forged token, another server's name on our token, a token of
		// another user than claimed, a device that is not the user's.
		forged := map[string]any{"access_token": "oid_forged", "token_type": "Bearer", "matrix_server_name": s.Config.ServerName, "expires_in": 3600}
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", request(forged, alice, device)), http.StatusUnauthorized, "M_UNAUTHORIZED")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/sfu/get", "", map[string]any{"room": roomID, "openid_token": forged, "device_id": device}),
			http.StatusUnauthorized, "M_UNAUTHORIZED")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", request(oid, bob, deviceOf(t, s, bobTok))), http.StatusUnauthorized, "M_UNAUTHORIZED")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", request(oid, alice, deviceOf(t, s, bobTok))), http.StatusUnauthorized, "M_UNAUTHORIZED")
		// Bob's own token, but he is not in the room.
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", request(openIDToken(t, s, bob, bobTok), bob, deviceOf(t, s, bobTok))),
			http.StatusForbidden, "M_FORBIDDEN")
		// Malformed requests.
		bad := request(oid, alice, device)
		bad["room_id"] = "#alias:hearth.test"
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", bad), http.StatusBadRequest, "M_BAD_JSON")
		bad = request(oid, alice, device)
		delete(bad, "slot_id")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", bad), http.StatusBadRequest, "M_BAD_JSON")
		bad = request(map[string]any{"matrix_server_name": s.Config.ServerName}, alice, device)
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", bad), http.StatusBadRequest, "M_BAD_JSON")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", "not json"), http.StatusBadRequest, "M_NOT_JSON")

		// Delegated delayed leave: only with the caller's own scheduled
		// delayed event and a delay_timeout within the maximum.
		r = s.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/org.matrix.msc3401.call.member/_"+url.PathEscape(alice+"_"+device)+"?org.matrix.msc4140.delay=60000", aliceTok, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		delayID := r.JSON["delay_id"].(string)
		delegated := func(user, device, delayID string, timeout any) map[string]any {
			req := request(oid, user, device)
			req["delay_id"], req["delay_timeout"], req["delay_cs_api_url"] = delayID, timeout, "https://elsewhere.example"
			return req
		}
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, "syd_unknown", 10000)), http.StatusBadRequest, "M_BAD_JSON")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, delayID, 0)), http.StatusBadRequest, "M_BAD_JSON")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, "", 10000)), http.StatusBadRequest, "M_BAD_JSON")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, delayID, int64(1)<<52)), http.StatusBadRequest, "M_BAD_JSON")
		bobReq := delegated(bob, deviceOf(t, s, bobTok), delayID, 10000)
		bobReq["openid_token"] = openIDToken(t, s, bob, bobTok)
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", bobReq), http.StatusBadRequest, "M_BAD_JSON")
		r = s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, delayID, 10000))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["jwt"].(string); !ok {
			t.Fatalf("no JWT with a valid delegation: %s", r.Body)
		}
		r = s.Do(t, "POST", "/_hearth/livekit/sfu/get", "", map[string]any{"room": roomID, "openid_token": oid, "device_id": device,
			"delay_id": delayID, "delay_timeout": 10000, "delay_cs_api_url": "https://elsewhere.example"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		// A finalised delayed event can no longer be delegated.
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"+delayID+"/cancel", aliceTok, map[string]any{}), http.StatusOK, "")
		noJWT(s.Do(t, "POST", "/_hearth/livekit/get_token", "", delegated(alice, device, delayID, 10000)), http.StatusBadRequest, "M_BAD_JSON")
	})
}

// Each client IP may ask for so many tokens.
func TestLiveKitRateLimit(t *testing.T) {
	s := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		withLiveKit(t, newFakeSFU(t))(c)
		c.RateLimits = "on"
		c.RateLimitMessagePerSecond, c.RateLimitMessageBurst = 0.01, 3
	})
	for i := 0; i < 3; i++ {
		r := s.Do(t, "POST", "/_hearth/livekit/get_token", "", map[string]any{})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_BAD_JSON")
	}
	r := s.Do(t, "POST", "/_hearth/livekit/get_token", "", map[string]any{})
	hearthtest.Expect(t, r, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
}

// A user of another server gets a token after its server confirms their
// OpenID token over federation; restricted, they may only join a call a
// user with full access started.
func TestLiveKitGetTokenRemote(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		sfu := newFakeSFU(t)
		lk := withLiveKit(t, sfu)
		fed := hearthtest.NewFederation(t, b, 2, func(i int, c *config.Config) {
			if i == 0 {
				lk(c)
			}
		})
		hs, remote := fed[0], fed[1]
		alice, aliceTok := hs.RegisterUser(t, "alice")
		bob, bobTok := remote.RegisterUser(t, "bob")
		r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		r = remote.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(hs.Config.ServerName), bobTok, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, _, _ := hs.Rooms.MembershipOf(t.Context(), roomID, bob)
			if m == "join" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("bob's join did not reach alice's server")
			}
			time.Sleep(50 * time.Millisecond)
		}
		bobDevice := deviceOf(t, remote, bobTok)
		bobReq := func(oid map[string]any) map[string]any {
			return map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
				"member": map[string]any{"id": "bobmember", "claimed_user_id": bob, "claimed_device_id": bobDevice}}
		}
		oid := openIDToken(t, remote, bob, bobTok)

		// No call yet: bob may not start one on alice's server's SFU.
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", bobReq(oid))
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
		alias := rtc.RoomAlias(roomID, "m.call#ROOM")
		if sfu.has(alias) {
			t.Fatal("a restricted user's request created the LiveKit room")
		}

		// Alice starts the call; bob may join it, without roomCreate.
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM",
			"openid_token": openIDToken(t, hs, alice, aliceTok),
			"member":       map[string]any{"id": "alicemember", "claimed_user_id": alice, "claimed_device_id": deviceOf(t, hs, aliceTok)}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", bobReq(oid))
		hearthtest.Expect(t, r, http.StatusOK, "")
		identity, grant, _ := verifyJWT(t, r.JSON["jwt"].(string))
		if identity != rtc.Identity(bob, bobDevice, "bobmember") || grant.Room != alias {
			t.Fatalf("identity %q room %q", identity, grant.Room)
		}
		if grant.RoomCreate || !grant.RoomJoin || !grant.GetCanSubscribe() || !grant.GetCanPublish() || !grant.GetCanPublishData() {
			t.Fatalf("restricted grant: %+v", grant)
		}

		// A token bob's server does not know, and a claim of another user.
		forged := map[string]any{"access_token": "oid_forged", "token_type": "Bearer", "matrix_server_name": remote.Config.ServerName, "expires_in": 3600}
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", bobReq(forged))
		hearthtest.Expect(t, r, http.StatusUnauthorized, "M_UNAUTHORIZED")
		req := bobReq(oid)
		req["member"].(map[string]any)["claimed_user_id"] = alice
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", req)
		hearthtest.Expect(t, r, http.StatusUnauthorized, "M_UNAUTHORIZED")
		// Bob's delayed events are on his server: no delegation here.
		req = bobReq(oid)
		req["delay_id"], req["delay_timeout"] = "syd_bobs", 10000
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", req)
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_BAD_JSON")
		// Bob's token said to be alice's server's: unknown there.
		oid["matrix_server_name"] = hs.Config.ServerName
		r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", bobReq(oid))
		hearthtest.Expect(t, r, http.StatusUnauthorized, "M_UNAUTHORIZED")
	})
}

// With bob's server listed in rtc_full_access_servers, bob may start a call.
func TestLiveKitFullAccessServers(t *testing.T) {
	sfu := newFakeSFU(t)
	lk := withLiveKit(t, sfu)
	fed := hearthtest.NewFederation(t, hearthtest.SQLite, 2, func(i int, c *config.Config) {
		if i == 0 {
			lk(c)
		}
	})
	hs, remote := fed[0], fed[1]
	// The full-access list is read at start: restart with it.
	hs.Config.RTCFullAccessServers = []string{remote.Config.ServerName}
	hs.Restart(t)
	_, aliceTok := hs.RegisterUser(t, "alice")
	bob, bobTok := remote.RegisterUser(t, "bob")
	r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	roomID := r.JSON["room_id"].(string)
	r = remote.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(hs.Config.ServerName), bobTok, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	deadline := time.Now().Add(10 * time.Second)
	for m := ""; m != "join"; m, _, _ = hs.Rooms.MembershipOf(t.Context(), roomID, bob) {
		if time.Now().After(deadline) {
			t.Fatal("bob's join did not reach alice's server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r = hs.Do(t, "POST", "/_hearth/livekit/get_token", "", map[string]any{"room_id": roomID, "slot_id": "m.call#ROOM",
		"openid_token": openIDToken(t, remote, bob, bobTok),
		"member":       map[string]any{"id": "m", "claimed_user_id": bob, "claimed_device_id": deviceOf(t, remote, bobTok)}})
	hearthtest.Expect(t, r, http.StatusOK, "")
	if _, grant, _ := verifyJWT(t, r.JSON["jwt"].(string)); !grant.RoomCreate {
		t.Fatalf("full-access server's user got %+v", grant)
	}
	if !sfu.has(rtc.RoomAlias(roomID, "m.call#ROOM")) {
		t.Fatal("the LiveKit room was not created")
	}
}
