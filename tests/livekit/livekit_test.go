package livekit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/livekit/protocol/livekit"
	lklogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rtc"
)

// livekit-server --dev's API key and secret.
const (
	devKey    = "devkey"
	devSecret = "secret"
)

// sfu is a livekit-server process of the test.
type sfu struct {
	wsURL, httpURL string
}

// freePort is a port nothing listens on now, TCP or UDP.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// syncBuffer collects a process's output for the test log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startSFU runs livekit-server in development mode on 127.0.0.1 with
// ports of its own, and rooms made only by RoomService.CreateRoom (as
// docs/calls.md recommends). Without the binary the test is skipped, or fails
// under CI (CI installs it).
func startSFU(t *testing.T) *sfu {
	t.Helper()
	bin := os.Getenv("LIVEKIT_SERVER")
	if bin == "" {
		bin = "livekit-server"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("livekit-server not found (LIVEKIT_SERVER=%q): %v", os.Getenv("LIVEKIT_SERVER"), err)
		}
		t.Skipf("livekit-server not found (set LIVEKIT_SERVER): %v", err)
	}
	port, tcpPort, udpPort := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp")
	body := fmt.Sprintf("port: %d\nrtc:\n  tcp_port: %d\n  udp_port: %d\n  use_external_ip: false\nroom:\n  auto_create: false\nlogging:\n  level: info\n", port, tcpPort, udpPort)
	cmd := exec.Command(path, "--dev", "--bind", "127.0.0.1", "--node-ip", "127.0.0.1", "--config-body", body)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting livekit-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("livekit-server output:\n%s", out.String())
		}
	})
	s := &sfu{wsURL: fmt.Sprintf("ws://127.0.0.1:%d", port), httpURL: fmt.Sprintf("http://127.0.0.1:%d", port)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.httpURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("livekit-server did not come up: %v\n%s", err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// user is a Matrix user on one device.
type user struct {
	hs            *hearthtest.Server
	id, token, dv string
}

func login(t *testing.T, hs *hearthtest.Server, userID string) user {
	t.Helper()
	r := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": userID}, "password": "password"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return user{hs: hs, id: userID, token: r.JSON["access_token"].(string), dv: r.JSON["device_id"].(string)}
}

func newUser(t *testing.T, hs *hearthtest.Server, localpart string) user {
	t.Helper()
	id, _ := hs.RegisterUser(t, localpart)
	return login(t, hs, id)
}

func (u user) openID(t *testing.T) map[string]any {
	t.Helper()
	r := u.hs.Do(t, "POST", "/_matrix/client/v3/user/"+url.PathEscape(u.id)+"/openid/request_token", u.token, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON
}

// getToken asks the authorization service of hs for u's LiveKit token,
// found through hs's advertised transport as a client would.
func (u user) getToken(t *testing.T, service, roomID, member string, oid map[string]any) hearthtest.Response {
	t.Helper()
	return hearthtest.Do(t, http.DefaultClient, "POST", service+"/get_token", "", map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": oid,
		"member": map[string]any{"id": member, "claimed_user_id": u.id, "claimed_device_id": u.dv}})
}

// roomService is the SFU's RoomService with a given bearer token.
func roomService(ctx context.Context, t *testing.T, s *sfu, jwt string) (livekit.RoomService, context.Context) {
	t.Helper()
	h := make(http.Header)
	h.Set("Authorization", "Bearer "+jwt)
	ctx, err := twirp.WithHTTPRequestHeaders(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	return livekit.NewRoomServiceJSONClient(s.httpURL, &http.Client{Timeout: 10 * time.Second}), ctx
}

// received collects the data packets a participant gets.
type received struct {
	mu  sync.Mutex
	got map[string][]string // sender identity -> payloads
	ch  chan struct{}
}

func newReceived() *received {
	return &received{got: map[string][]string{}, ch: make(chan struct{}, 100)}
}

func (r *received) callback() *lksdk.RoomCallback {
	return &lksdk.RoomCallback{ParticipantCallback: lksdk.ParticipantCallback{
		OnDataPacket: func(p lksdk.DataPacket, params lksdk.DataReceiveParams) {
			if u, ok := p.(*lksdk.UserDataPacket); ok {
				r.mu.Lock()
				r.got[params.SenderIdentity] = append(r.got[params.SenderIdentity], string(u.Payload))
				r.mu.Unlock()
				r.ch <- struct{}{}
			}
		}}}
}

func (r *received) has(sender, payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.got[sender] {
		if p == payload {
			return true
		}
	}
	return false
}

// waitFor waits until the participant got payload from sender.
func (r *received) waitFor(t *testing.T, who, sender, payload string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for !r.has(sender, payload) {
		select {
		case <-r.ch:
		case <-timeout:
			t.Fatalf("%s did not receive %q from %s", who, payload, sender)
		}
	}
}

// A call through Hearth's LiveKit authorization service on a real SFU:
// a local user on two devices and a user of another server get tokens
// from the local server's service, connect to LiveKit and exchange data;
// the remote (restricted) user cannot start a call or create LiveKit
// rooms; forged OpenID tokens get no token.
func TestLiveKitCall(t *testing.T) {
	lksdk.SetLogger(lklogger.GetDiscardLogger()) // pion's ICE chatter
	s := startSFU(t)
	fed := hearthtest.NewFederation(t, hearthtest.SQLite, 2, func(i int, c *config.Config) {
		c.LiveKitURL, c.LiveKitAPIKey, c.LiveKitAPISecret = s.wsURL, devKey, devSecret
		c.WellKnownClient = "http://placeholder.invalid"
	})
	hs, remote := fed[0], fed[1]
	// Each server's advertised service is on its own client listener.
	for _, srv := range fed {
		srv.Config.WellKnownClient = srv.URL
		srv.Restart(t)
	}
	r := hs.Do(t, "GET", "/.well-known/matrix/client", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	foci, _ := r.JSON["org.matrix.msc4143.rtc_foci"].([]any)
	if len(foci) != 1 {
		t.Fatalf("well-known: %s", r.Body)
	}
	service := foci[0].(map[string]any)["livekit_service_url"].(string)
	if service != hs.URL+"/_hearth/livekit" {
		t.Fatalf("service URL %s", service)
	}

	alice1 := newUser(t, hs, "alice")
	alice2 := login(t, hs, alice1.id)
	bob := newUser(t, remote, "bob")
	r = hs.Do(t, "POST", "/_matrix/client/v3/createRoom", alice1.token, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	roomID := r.JSON["room_id"].(string)
	r = remote.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(hs.Config.ServerName), bob.token, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m, _, _ := hs.Rooms.MembershipOf(t.Context(), roomID, bob.id); m == "join" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's join did not reach alice's server")
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx := t.Context()
	alias := rtc.RoomAlias(roomID, "m.call#ROOM")
	admin := lksdk.NewRoomServiceClient(s.httpURL, devKey, devSecret)
	roomOnSFU := func() bool {
		res, err := admin.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{alias}})
		if err != nil {
			t.Fatalf("ListRooms: %v", err)
		}
		return len(res.Rooms) == 1
	}
	noJWT := func(r hearthtest.Response, status int) {
		t.Helper()
		hearthtest.Expect(t, r, status, "")
		if _, ok := r.JSON["jwt"]; ok {
			t.Fatalf("a JWT with an error: %s", r.Body)
		}
	}

	// Forged tokens, of this server and of bob's.
	noJWT(alice1.getToken(t, service, roomID, "a1", map[string]any{"access_token": "oid_forged", "token_type": "Bearer",
		"matrix_server_name": hs.Config.ServerName, "expires_in": 3600}), http.StatusUnauthorized)
	noJWT(bob.getToken(t, service, roomID, "b", map[string]any{"access_token": "oid_forged", "token_type": "Bearer",
		"matrix_server_name": remote.Config.ServerName, "expires_in": 3600}), http.StatusUnauthorized)
	// Bob (restricted) cannot start the call: no LiveKit room is made.
	bobOID := bob.openID(t)
	noJWT(bob.getToken(t, service, roomID, "b", bobOID), http.StatusForbidden)
	if roomOnSFU() {
		t.Fatal("a restricted user's request created the LiveKit room")
	}

	// Alice starts it on both devices, then bob joins.
	tokens := map[string]string{}
	identities := map[string]string{}
	for name, u := range map[string]user{"alice1": alice1, "alice2": alice2} {
		r := u.getToken(t, service, roomID, name, u.openID(t))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["url"] != s.wsURL {
			t.Fatalf("url: %s", r.Body)
		}
		tokens[name] = r.JSON["jwt"].(string)
		identities[name] = rtc.Identity(u.id, u.dv, name)
	}
	if !roomOnSFU() {
		t.Fatal("the LiveKit room was not created for alice")
	}
	r = bob.getToken(t, service, roomID, "bob", bobOID)
	hearthtest.Expect(t, r, http.StatusOK, "")
	tokens["bob"], identities["bob"] = r.JSON["jwt"].(string), rtc.Identity(bob.id, bob.dv, "bob")

	// Bob's token cannot create LiveKit rooms; alice's can.
	rs, bctx := roomService(ctx, t, s, tokens["bob"])
	if _, err := rs.CreateRoom(bctx, &livekit.CreateRoomRequest{Name: "bobs-own-room"}); err == nil {
		t.Fatal("a restricted token created a LiveKit room")
	}
	rs, actx := roomService(ctx, t, s, tokens["alice1"])
	if _, err := rs.CreateRoom(actx, &livekit.CreateRoomRequest{Name: alias}); err != nil {
		t.Fatalf("a full-access token could not create its room: %v", err)
	}

	// All three connect and exchange data.
	rooms := map[string]*lksdk.Room{}
	recv := map[string]*received{}
	for _, name := range []string{"alice1", "alice2", "bob"} {
		recv[name] = newReceived()
		room, err := lksdk.ConnectToRoomWithToken(s.wsURL, tokens[name], recv[name].callback(), lksdk.WithAutoSubscribe(true))
		if err != nil {
			t.Fatalf("%s connecting to LiveKit: %v", name, err)
		}
		t.Cleanup(room.Disconnect)
		rooms[name] = room
		if room.Name() != alias || room.LocalParticipant.Identity() != identities[name] {
			t.Fatalf("%s is %q in %q", name, room.LocalParticipant.Identity(), room.Name())
		}
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		res, err := admin.ListParticipants(ctx, &livekit.ListParticipantsRequest{Room: alias})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Participants) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d participants on the SFU", len(res.Participants))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := rooms["alice1"].LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello from alice")), lksdk.WithDataPublishReliable(true)); err != nil {
		t.Fatalf("alice publishing: %v", err)
	}
	recv["alice2"].waitFor(t, "alice2", identities["alice1"], "hello from alice")
	recv["bob"].waitFor(t, "bob", identities["alice1"], "hello from alice")
	if err := rooms["bob"].LocalParticipant.PublishDataPacket(lksdk.UserData([]byte("hello from bob")), lksdk.WithDataPublishReliable(true)); err != nil {
		t.Fatalf("bob publishing: %v", err)
	}
	recv["alice1"].waitFor(t, "alice1", identities["bob"], "hello from bob")
	if strings.Contains(fmt.Sprint(recv["bob"].got), "hello from bob") {
		t.Fatal("bob received his own packet")
	}
}

// Delegated delayed leave (Element Call's delay_id with its token
// request), on a real SFU: while alice's participant is connected the
// service keeps her delayed hang up from firing, well past its delay; when
// she disconnects, the service sends it at once, sooner than the delayed
// event's own timer could have.
func TestLiveKitDelegatedLeave(t *testing.T) {
	lksdk.SetLogger(lklogger.GetDiscardLogger())
	s := startSFU(t)
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.LiveKitURL, c.LiveKitAPIKey, c.LiveKitAPISecret = s.wsURL, devKey, devSecret
		c.WellKnownClient = "http://placeholder.invalid" // the service is called directly
	})
	service := hs.URL + "/_hearth/livekit"
	alice := newUser(t, hs, "alice")
	r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", alice.token, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	roomID := r.JSON["room_id"].(string)

	// The hang up: an empty membership, 9 s after the last restart. The
	// service looks every 3 s (a third of the delay).
	const delay = 9 * time.Second
	key := "_" + alice.id + "_" + alice.dv + "_m.call"
	statePath := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/state/org.matrix.msc3401.call.member/" + url.PathEscape(key)
	r = hs.Do(t, "PUT", statePath+"?org.matrix.msc4140.delay="+fmt.Sprint(delay.Milliseconds()), alice.token, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	delayID := r.JSON["delay_id"].(string)
	hungUp := func() bool {
		return hs.Do(t, "GET", statePath, alice.token, nil).Status == http.StatusOK
	}

	r = hearthtest.Do(t, http.DefaultClient, "POST", service+"/get_token", "", map[string]any{
		"room_id": roomID, "slot_id": "m.call#ROOM", "openid_token": alice.openID(t),
		"member":   map[string]any{"id": "m1", "claimed_user_id": alice.id, "claimed_device_id": alice.dv},
		"delay_id": delayID, "delay_timeout": delay.Milliseconds(), "delay_cs_api_url": hs.URL})
	hearthtest.Expect(t, r, http.StatusOK, "")
	room, err := lksdk.ConnectToRoomWithToken(s.wsURL, r.JSON["jwt"].(string), &lksdk.RoomCallback{}, lksdk.WithAutoSubscribe(false))
	if err != nil {
		t.Fatalf("connecting to LiveKit: %v", err)
	}
	connected := time.Now()
	for time.Since(connected) < delay+4*time.Second {
		if hungUp() {
			t.Fatalf("the hang up was sent %v after connecting, while connected", time.Since(connected))
		}
		time.Sleep(500 * time.Millisecond)
	}

	// The service restarted the delay at most 3 s before this: its own
	// timer could not fire within 6 s from now.
	room.Disconnect()
	left := time.Now()
	for !hungUp() {
		if time.Since(left) > 5500*time.Millisecond {
			t.Fatalf("the hang up was not sent within %v of leaving the SFU", time.Since(left))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("hang up sent %v after leaving the SFU (delay %v)", time.Since(left).Round(10*time.Millisecond), delay)
	r = hs.Do(t, "GET", "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/"+delayID, alice.token, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	if r.JSON["event_id"] == nil {
		t.Fatalf("the delayed event is not marked sent: %s", r.Body)
	}
}
