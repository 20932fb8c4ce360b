package slidingsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// server is a Hearth process this test built and started.
type server struct {
	bin, dataDir, addr string
	cmd                *exec.Cmd
	exited             chan struct{}
	log                *os.File
}

func buildHearth(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hearth")
	build := exec.Command("go", "build", "-o", bin, "./cmd/hearth")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building hearth: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs the server on its data directory and address and waits until
// it answers /versions.
func (s *server) start(t *testing.T) {
	t.Helper()
	var err error
	if s.log, err = os.OpenFile(filepath.Join(s.dataDir+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, "serve", "--data-dir", s.dataDir, "--registration", "open", "--rate-limits", "off",
		"--listen", s.addr, "--federation-listen", "", "--bcrypt-cost", "4", "--log-level", "warn")
	// No sign-in alerts: the phone's sign-in would add a notices room to
	// the rooms the test counts.
	s.cmd.Env = append(os.Environ(), "HEARTH_SIGN_IN_ALERTS=false")
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.exited = make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			t.Fatalf("hearth exited at start; log %s", s.log.Name())
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := http.Get("http://" + s.addr + "/_matrix/client/versions"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("hearth did not answer on %s", s.addr)
}

func (s *server) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	s.log.Close()
	s.cmd = nil
}

// client is one device of one user.
type client struct {
	base, userID, deviceID, token string
}

type response struct {
	status int
	body   []byte
	json   map[string]any
}

func (c client) do(t *testing.T, method, path string, body any) response {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	r := response{status: resp.StatusCode}
	r.body, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(r.body, &r.json)
	return r
}

func (c client) must(t *testing.T, method, path string, body any) map[string]any {
	t.Helper()
	r := c.do(t, method, path, body)
	if r.status != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	return r.json
}

// register creates an account through the user-interactive flow (dummy
// stage) and returns its first device.
func register(t *testing.T, base, name string) client {
	t.Helper()
	c := client{base: base}
	body := map[string]any{"username": name, "password": "correct horse " + name, "initial_device_display_name": "laptop"}
	r := c.do(t, "POST", "/_matrix/client/v3/register", body)
	if r.status == http.StatusUnauthorized {
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": r.json["session"]}
		r = c.do(t, "POST", "/_matrix/client/v3/register", body)
	}
	if r.status != http.StatusOK {
		t.Fatalf("register %s: %d %s", name, r.status, r.body)
	}
	return client{base: base, userID: r.json["user_id"].(string), deviceID: r.json["device_id"].(string), token: r.json["access_token"].(string)}
}

// login is a new device of an existing account, as a phone signing in.
func login(t *testing.T, base, name, device string) client {
	t.Helper()
	c := client{base: base}
	j := c.must(t, "POST", "/_matrix/client/v3/login", map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": name},
		"password":   "correct horse " + name, "initial_device_display_name": device,
	})
	return client{base: base, userID: j["user_id"].(string), deviceID: j["device_id"].(string), token: j["access_token"].(string)}
}

var txn int

func (c client) send(t *testing.T, roomID, body string) string {
	t.Helper()
	txn++
	j := c.must(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t"+strconv.Itoa(txn),
		map[string]any{"msgtype": "m.text", "body": body})
	return j["event_id"].(string)
}

// slidingSync is one MSC4186 request on the unstable endpoint, as
// matrix-rust-sdk sends it: pos and timeout in the query.
func (c client) slidingSync(t *testing.T, pos string, timeout time.Duration, body map[string]any) response {
	t.Helper()
	q := url.Values{"timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if pos != "" {
		q.Set("pos", pos)
	}
	return c.do(t, "POST", "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?"+q.Encode(), body)
}

// conn is one sliding sync connection: its conn_id, request body and pos.
type conn struct {
	c    client
	body map[string]any
	pos  string
}

func (n *conn) sync(t *testing.T, timeout time.Duration) map[string]any {
	t.Helper()
	r := n.c.slidingSync(t, n.pos, timeout, n.body)
	if r.status != http.StatusOK {
		t.Fatalf("sliding sync (%v, pos %q): %d %s", n.body["conn_id"], n.pos, r.status, r.body)
	}
	n.pos = r.json["pos"].(string)
	return r.json
}

// syncUntil long-polls until ok accepts a response.
func (n *conn) syncUntil(t *testing.T, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if j := n.sync(t, 5*time.Second); ok(j) {
			return j
		}
	}
	t.Fatalf("no sliding sync response with %s", what)
	return nil
}

func get(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

func bodies(room any) []string {
	var out []string
	tl, _ := get(room, "timeline").([]any)
	for _, e := range tl {
		if get(e, "type") == "m.room.message" {
			out = append(out, get(e, "content", "body").(string))
		}
	}
	return out
}

func TestPhone(t *testing.T) {
	s := &server{bin: buildHearth(t), dataDir: filepath.Join(t.TempDir(), "data"), addr: freeAddr(t)}
	s.start(t)
	defer s.stop()
	base := "http://" + s.addr

	versions := client{base: base}.must(t, "GET", "/_matrix/client/versions", nil)
	if get(versions, "unstable_features", "org.matrix.simplified_msc3575") != true {
		t.Fatalf("sliding sync not advertised: %v", versions)
	}

	// Alice has an account (made on her laptop) with 25 rooms; Bob is in
	// the oldest.
	laptop := register(t, base, "alice")
	bob := register(t, base, "bob")
	var rooms []string
	for i := range 25 {
		body := map[string]any{"name": fmt.Sprintf("room %02d", i)}
		if i == 0 {
			body["preset"] = "public_chat"
		}
		rooms = append(rooms, laptop.must(t, "POST", "/_matrix/client/v3/createRoom", body)["room_id"].(string))
		laptop.send(t, rooms[i], fmt.Sprintf("hello %02d", i))
	}
	bob.must(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(rooms[0]), map[string]any{})
	laptop.send(t, rooms[24], "newest")

	// The phone signs in and opens two connections, as Element X does.
	phone := login(t, base, "alice", "phone")
	roomList := &conn{c: phone, body: map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{"all_rooms": map[string]any{
			"ranges":         [][]int{{0, 9}},
			"timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""}, {"m.room.member", "$LAZY"}},
		}},
		"extensions": map[string]any{"account_data": map[string]any{"enabled": true}, "receipts": map[string]any{"enabled": true},
			"typing": map[string]any{"enabled": true}},
	}}
	encryption := &conn{c: phone, body: map[string]any{
		"conn_id":    "encryption",
		"extensions": map[string]any{"to_device": map[string]any{"enabled": true}, "e2ee": map[string]any{"enabled": true}},
	}}

	// The first window: the 10 most recent rooms, newest first.
	j := roomList.sync(t, 0)
	if n := get(j, "lists", "all_rooms", "count"); n != float64(25) {
		t.Fatalf("count %v: %v", n, j)
	}
	got := get(j, "rooms").(map[string]any)
	if len(got) != 10 {
		t.Fatalf("window of %d rooms", len(got))
	}
	for i := 15; i < 25; i++ {
		room := got[rooms[i]]
		if room == nil || get(room, "name") != fmt.Sprintf("room %02d", i) || get(room, "initial") != true || len(bodies(room)) != 1 {
			t.Fatalf("room %02d in the window: %v", i, room)
		}
	}
	if !slices.Equal(bodies(got[rooms[24]]), []string{"newest"}) {
		t.Fatalf("room 24 timeline: %v", got[rooms[24]])
	}
	if get(got[rooms[24]], "bump_stamp").(float64) <= get(got[rooms[23]], "bump_stamp").(float64) {
		t.Fatal("bump_stamp does not order by recency")
	}
	if get(j, "extensions", "account_data", "global") == nil {
		t.Fatalf("account_data extension: %v", get(j, "extensions"))
	}
	enc := encryption.sync(t, 0)
	if get(enc, "extensions", "e2ee", "device_one_time_keys_count") == nil || len(get(enc, "rooms").(map[string]any)) != 0 {
		t.Fatalf("encryption connection: %v", enc)
	}

	// Opening the oldest room: a room subscription with a longer timeline,
	// and prev_batch to scroll back with /messages.
	roomList.body["room_subscriptions"] = map[string]any{rooms[0]: map[string]any{
		"timeline_limit": 2, "required_state": [][]string{{"*", "*"}}}}
	j = roomList.sync(t, 0)
	opened := get(j, "rooms", rooms[0])
	if opened == nil || get(opened, "initial") != true || get(opened, "limited") != true || get(opened, "prev_batch") == nil {
		t.Fatalf("room subscription: %v", opened)
	}
	if get(opened, "joined_count") != float64(2) {
		t.Fatalf("joined_count: %v", get(opened, "joined_count"))
	}
	back := phone.must(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(rooms[0])+"/messages?dir=b&limit=50&from="+
		url.QueryEscape(get(opened, "prev_batch").(string)), nil)
	if chunk, _ := back["chunk"].([]any); len(chunk) == 0 {
		t.Fatalf("nothing before prev_batch: %v", back)
	}
	delete(roomList.body, "room_subscriptions")
	roomList.sync(t, 0)

	// Bob writes in the oldest room: it is bumped into the window, and a
	// waiting request returns it.
	done := make(chan map[string]any, 1)
	go func() {
		r := roomList.c.slidingSync(t, roomList.pos, 20*time.Second, roomList.body)
		done <- map[string]any{"status": r.status, "json": r.json}
	}()
	time.Sleep(200 * time.Millisecond)
	pingID := bob.send(t, rooms[0], "ping from bob")
	var res map[string]any
	select {
	case res = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("a waiting request did not wake for a new message")
	}
	if res["status"] != http.StatusOK {
		t.Fatalf("long-poll: %v", res)
	}
	j = res["json"].(map[string]any)
	roomList.pos = j["pos"].(string)
	bumped := get(j, "rooms", rooms[0])
	if !slices.Contains(bodies(bumped), "ping from bob") || !slices.Contains(get(bumped, "lists").([]any), any("all_rooms")) {
		t.Fatalf("bumped room: %v", bumped)
	}

	// Thread subscriptions (MSC4306, MSC4308): the phone replies in a
	// thread on Bob's message and subscribes, as the MSC asks of clients;
	// the room-list connection hears of it through the extension.
	txn++
	phone.must(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(rooms[0])+"/send/m.room.message/t"+strconv.Itoa(txn), map[string]any{
		"msgtype": "m.text", "body": "in a thread", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": pingID}})
	phone.must(t, "PUT", "/_matrix/client/unstable/io.element.msc4306/rooms/"+url.PathEscape(rooms[0])+"/thread/"+url.PathEscape(pingID)+"/subscription", map[string]any{})
	roomList.body["extensions"].(map[string]any)["io.element.msc4308.thread_subscriptions"] = map[string]any{"enabled": true, "limit": 10}
	roomList.syncUntil(t, "the thread subscription", func(j map[string]any) bool {
		sub := get(j, "extensions", "io.element.msc4308.thread_subscriptions", "subscribed", rooms[0], pingID)
		return sub != nil && get(sub, "automatic") == false
	})

	// To-device: Bob sends to the phone; it arrives once, and not again
	// after the phone acknowledges it with since.
	bob.must(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/td1", map[string]any{
		"messages": map[string]any{phone.userID: map[string]any{phone.deviceID: map[string]any{"action": "request", "n": 1}}}})
	enc = encryption.syncUntil(t, "the to-device message", func(j map[string]any) bool {
		evs, _ := get(j, "extensions", "to_device", "events").([]any)
		return len(evs) == 1 && get(evs[0], "sender") == bob.userID
	})
	since := get(enc, "extensions", "to_device", "next_batch").(string)
	encryption.body["extensions"].(map[string]any)["to_device"] = map[string]any{"enabled": true, "since": since}
	enc = encryption.sync(t, 0)
	if evs, _ := get(enc, "extensions", "to_device", "events").([]any); len(evs) != 0 {
		t.Fatalf("to-device delivered twice: %v", evs)
	}

	// E2EE: the phone's one-time keys are counted, and a new device of
	// Alice shows in device_lists.changed.
	phone.must(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"one_time_keys": map[string]any{
		"curve25519:AAAAAQ": "dGVzdCBrZXkgMQ", "curve25519:AAAAAg": "dGVzdCBrZXkgMg"}})
	tablet := login(t, base, "alice", "tablet")
	enc = encryption.syncUntil(t, "the new device", func(j map[string]any) bool {
		changed, _ := get(j, "extensions", "e2ee", "device_lists", "changed").([]any)
		return slices.Contains(changed, any(phone.userID))
	})
	if n := get(enc, "extensions", "e2ee", "device_one_time_keys_count", "curve25519"); n != float64(2) {
		t.Fatalf("one-time keys count: %v", get(enc, "extensions", "e2ee"))
	}
	_ = tablet

	// The server restarts; both connections go on from their pos.
	s.stop()
	s.start(t)
	bob.send(t, rooms[0], "after restart")
	j = roomList.syncUntil(t, "the message sent after the restart", func(j map[string]any) bool {
		return slices.Contains(bodies(get(j, "rooms", rooms[0])), "after restart")
	})
	if get(j, "rooms", rooms[0], "initial") != nil {
		t.Fatalf("room sent in full again after the restart: %v", get(j, "rooms", rooms[0]))
	}
	bob.must(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room_key_request/td2", map[string]any{
		"messages": map[string]any{phone.userID: map[string]any{phone.deviceID: map[string]any{"action": "request", "n": 2}}}})
	encryption.syncUntil(t, "the to-device message after the restart", func(j map[string]any) bool {
		evs, _ := get(j, "extensions", "to_device", "events").([]any)
		return len(evs) == 1 && get(evs[0], "content", "n") == float64(2)
	})

	// A pos the server does not know: M_UNKNOWN_POS, and the client starts
	// the connection again.
	r := phone.slidingSync(t, "12345678.s1", 0, roomList.body)
	if r.status != http.StatusBadRequest || r.json["errcode"] != "M_UNKNOWN_POS" {
		t.Fatalf("unknown pos: %d %s", r.status, r.body)
	}
	roomList.pos = ""
	j = roomList.sync(t, 0)
	if len(get(j, "rooms").(map[string]any)) != 10 || get(j, "rooms", rooms[0], "initial") != true {
		t.Fatalf("restarted connection: %v", j)
	}
}
