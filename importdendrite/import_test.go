package importdendrite_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/importdendrite"
	"github.com/hearth-matrix/hearth/storage"
)

// world is what the test made on Dendrite, and what Dendrite answered,
// recorded before the move.
type world struct {
	alice, bob, carol        string // user IDs
	aliceTok, aliceTok2      string
	aliceDev, aliceDev2      string
	bobTok, bobTok2, bobDev  string
	room1, room2, room3      string
	peerRoom                 string              // a room on the peer bob is invited to
	bobSees                  hearthtest.Response // Dendrite's /messages of room2 for bob, invited only
	filterID                 string
	media                    map[string][]byte // mxc -> bytes
	pngMXC                   string
	messages, state, members map[string]any // room -> Dendrite's answer
	bobSince                 string         // bob's saved sync token
	afterSince               []string       // events sent after bobSince, before the stop
	redacted, lastMessage    string
	bobOlm                   *olmDevice
	peer                     *hearthtest.Server // a Hearth federating with Dendrite's room1
	pat, patTok, patMessage  string
	masterKey, backupVersion string
}

const password = "correct horse battery staple"

// fill makes users, devices, rooms and media on Dendrite through its
// client API, as real clients would.
func fill(t *testing.T, d *dendrite, peer *hearthtest.Server) *world {
	w := &world{media: map[string][]byte{}, messages: map[string]any{}, state: map[string]any{}, members: map[string]any{}, peer: peer}
	w.pat, w.patTok = peer.RegisterUser(t, "pat")
	w.alice, w.aliceTok, w.aliceDev = d.register(t, "alice", password, true)
	w.aliceTok2, w.aliceDev2 = d.login(t, "alice", password, "Alice's phone")
	w.bob, w.bobTok, w.bobDev = d.register(t, "bob", password, false)
	w.bobTok2, _ = d.login(t, "bob", password, "Bob's laptop")
	var carolTok string
	w.carol, carolTok, _ = d.register(t, "carol", password, false)
	expect := func(r hearthtest.Response) hearthtest.Response {
		t.Helper()
		hearthtest.Expect(t, r, 200, "")
		return r
	}
	expect(d.do(t, "POST", "/_matrix/client/v3/account/deactivate", carolTok, map[string]any{
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": password},
	}))

	// Media: a PNG (Dendrite makes its thumbnails at upload) and a text file.
	var img bytes.Buffer
	pic := image.NewRGBA(image.Rect(0, 0, 200, 120))
	for x := 0; x < 200; x++ {
		for y := 0; y < 120; y++ {
			pic.Set(x, y, color.RGBA{uint8(x), uint8(y), 200, 255})
		}
	}
	if err := png.Encode(&img, pic); err != nil {
		t.Fatal(err)
	}
	upload := func(body []byte, ctype, name string) string {
		req, _ := http.NewRequest("POST", d.URL+"/_matrix/media/v3/upload?filename="+url.QueryEscape(name), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+w.aliceTok)
		req.Header.Set("Content-Type", ctype)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ContentURI string `json:"content_uri"`
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || json.Unmarshal(b, &out) != nil {
			t.Fatalf("upload: %d %s", resp.StatusCode, b)
		}
		w.media[out.ContentURI] = body
		return out.ContentURI
	}
	w.pngMXC = upload(img.Bytes(), "image/png", "gradient.png")
	upload([]byte("hello from dendrite\n"), "text/plain", "hello.txt")

	// Profile, account data, push rules, filter, ignored users, pusher,
	// registration token.
	expect(d.do(t, "PUT", "/_matrix/client/v3/profile/"+w.alice+"/displayname", w.aliceTok, map[string]any{"displayname": "Alice A."}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/profile/"+w.alice+"/avatar_url", w.aliceTok, map[string]any{"avatar_url": w.pngMXC}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/user/"+w.alice+"/account_data/com.example.settings", w.aliceTok, map[string]any{"theme": "dark"}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/pushrules/global/content/cats", w.aliceTok, map[string]any{"pattern": "cats", "actions": []any{"notify"}}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled", w.aliceTok, map[string]any{"enabled": false}))
	r := expect(d.do(t, "POST", "/_matrix/client/v3/user/"+w.alice+"/filter", w.aliceTok, map[string]any{"room": map[string]any{"timeline": map[string]any{"limit": 7}}}))
	w.filterID = r.JSON["filter_id"].(string)
	expect(d.do(t, "PUT", "/_matrix/client/v3/user/"+w.bob+"/account_data/m.ignored_user_list", w.bobTok, map[string]any{"ignored_users": map[string]any{w.carol: map[string]any{}}}))
	expect(d.do(t, "POST", "/_matrix/client/v3/pushers/set", w.aliceTok, map[string]any{
		"kind": "http", "app_id": "com.example.app", "pushkey": "pk-alice", "app_display_name": "Example", "device_display_name": "Alice's phone",
		"lang": "en", "data": map[string]any{"url": "https://127.0.0.1:9/_matrix/push/v1/notify"},
	}))
	expect(d.do(t, "POST", "/_dendrite/admin/registrationTokens/new", w.aliceTok, map[string]any{"token": "invite-only-123", "uses_allowed": 5}))

	// Rooms: a public one with an alias and history, a private one with a
	// pending invite, and one bob left and forgot.
	r = expect(d.do(t, "POST", "/_matrix/client/v3/createRoom", w.aliceTok, map[string]any{
		"preset": "public_chat", "visibility": "public", "room_alias_name": "general", "name": "General", "topic": "first topic",
	}))
	w.room1 = r.JSON["room_id"].(string)
	expect(d.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape("#general:"+d.ServerName), w.bobTok, map[string]any{}))
	// pat, of another server, joins over federation and speaks.
	expect(w.peer.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(w.room1)+"?server_name="+url.QueryEscape(d.ServerName), w.patTok, map[string]any{}))
	r = expect(w.peer.Do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/send/m.room.message/p1", w.patTok, map[string]any{"msgtype": "m.text", "body": "hello from the peer"}))
	w.patMessage = r.JSON["event_id"].(string)
	waitFor(t, "Dendrite to accept pat's message", func() bool {
		return strings.Contains(string(d.do(t, "GET", "/_matrix/client/v3/rooms/"+w.room1+"/messages?dir=b&limit=5", w.aliceTok, nil).Body), w.patMessage)
	})
	// pat invites bob to a room of the peer's: Dendrite keeps the invite of
	// a room it is not in.
	r = expect(w.peer.Do(t, "POST", "/_matrix/client/v3/createRoom", w.patTok, map[string]any{"preset": "private_chat", "name": "Over there"}))
	w.peerRoom = r.JSON["room_id"].(string)
	expect(w.peer.Do(t, "POST", "/_matrix/client/v3/rooms/"+w.peerRoom+"/invite", w.patTok, map[string]any{"user_id": w.bob}))
	waitFor(t, "Dendrite to receive pat's invite", func() bool {
		return strings.Contains(string(d.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", w.bobTok2, nil).Body), w.peerRoom)
	})
	send := func(tok, room, body string) string {
		t.Helper()
		r := expect(d.do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/%d", room, time.Now().UnixNano()), tok,
			map[string]any{"msgtype": "m.text", "body": body}))
		return r.JSON["event_id"].(string)
	}
	for i := 1; i <= 6; i++ {
		tok := w.aliceTok
		if i%2 == 0 {
			tok = w.bobTok
		}
		id := send(tok, w.room1, fmt.Sprintf("message %d", i))
		if i == 2 {
			w.redacted = id
		}
		w.lastMessage = id
	}
	expect(d.do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/state/m.room.topic/", w.aliceTok, map[string]any{"topic": "second topic"}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/redact/"+w.redacted+"/r1", w.bobTok, map[string]any{"reason": "oops"}))
	expect(d.do(t, "POST", "/_matrix/client/v3/rooms/"+w.room1+"/receipt/m.read/"+w.lastMessage, w.bobTok, map[string]any{}))
	expect(d.do(t, "POST", "/_matrix/client/v3/rooms/"+w.room1+"/read_markers", w.aliceTok, map[string]any{"m.fully_read": w.lastMessage}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/user/"+w.alice+"/rooms/"+w.room1+"/tags/m.favourite", w.aliceTok, map[string]any{"order": 0.5}))
	expect(d.do(t, "PUT", "/_matrix/client/v3/user/"+w.alice+"/rooms/"+w.room1+"/account_data/com.example.room", w.aliceTok, map[string]any{"pinned": true}))

	r = expect(d.do(t, "POST", "/_matrix/client/v3/createRoom", w.aliceTok, map[string]any{"preset": "private_chat", "name": "Secret"}))
	w.room2 = r.JSON["room_id"].(string)
	send(w.aliceTok, w.room2, "private hello")
	expect(d.do(t, "POST", "/_matrix/client/v3/rooms/"+w.room2+"/invite", w.aliceTok, map[string]any{"user_id": w.bob}))

	r = expect(d.do(t, "POST", "/_matrix/client/v3/createRoom", w.bobTok, map[string]any{"preset": "private_chat", "name": "Left behind"}))
	w.room3 = r.JSON["room_id"].(string)
	expect(d.do(t, "POST", "/_matrix/client/v3/rooms/"+w.room3+"/leave", w.bobTok, map[string]any{}))
	expect(d.do(t, "POST", "/_matrix/client/v3/rooms/"+w.room3+"/forget", w.bobTok, map[string]any{}))

	// Bob's client saves its sync token; then more happens before the stop.
	r = expect(d.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", w.bobTok, nil))
	w.bobSince = r.JSON["next_batch"].(string)
	// The peer is unreachable from here on: what Dendrite sends it stays
	// queued, and the import reports it.
	w.peer.FederationDown(t)
	w.afterSince = append(w.afterSince, send(w.aliceTok, w.room1, "sent after bob's last sync"))
	// The sync API projects the room server asynchronously: wait until it
	// has the last event before stopping.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = expect(d.do(t, "GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(w.bobSince), w.bobTok2, nil))
		if strings.Contains(string(r.Body), w.afterSince[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Dendrite's sync never showed %s", w.afterSince[0])
		}
	}

	fillE2EE(t, d, w)

	for _, room := range []string{w.room1, w.room2} {
		w.messages[room] = expect(d.do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=100", w.aliceTok, nil)).JSON
		w.state[room] = expect(d.do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/state", w.aliceTok, nil)).JSON
		w.members[room] = expect(d.do(t, "GET", "/_matrix/client/v3/rooms/"+room+"/joined_members", w.aliceTok, nil)).JSON
	}
	w.bobSees = d.do(t, "GET", "/_matrix/client/v3/rooms/"+w.room2+"/messages?dir=b&limit=100", w.bobTok, nil)
	var raw any
	_ = json.Unmarshal(expect(d.do(t, "GET", "/_matrix/client/v3/rooms/"+w.room1+"/state", w.aliceTok, nil)).Body, &raw)
	w.state[w.room1] = raw
	_ = json.Unmarshal(expect(d.do(t, "GET", "/_matrix/client/v3/rooms/"+w.room2+"/state", w.aliceTok, nil)).Body, &raw)
	w.state[w.room2] = raw
	return w
}

// TestImportDendrite moves a Dendrite that real clients filled into Hearth
// and checks through Hearth's HTTP API that nothing was lost.
func TestImportDendrite(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		peer := hearthtest.NewFederation(t, b, 1, func(_ int, c *config.Config) { c.FederationTLSInsecureSkipVerify = true })[0]
		d := startDendrite(t, b)
		w := fill(t, d, peer)
		d.stop(t)
		peer.WrapFederation(func(fed, _ http.Handler) http.Handler { return fed }) // the peer is back

		dataDir := filepath.Join(t.TempDir(), "hearth-data")
		dbURL := hearthtest.DatabaseURL(t, b)
		// What a newer Dendrite might have: the report must name it.
		d.exec(t, "ALTER TABLE userapi_accounts ADD COLUMN future_flag BOOLEAN", "CREATE TABLE userapi_future (x TEXT)",
			// An email address bound to alice: Dendrite binds one after an
			// identity server validated it, which this machine has none of.
			"INSERT INTO userapi_threepids (threepid, medium, localpart, server_name) VALUES ('Alice@Example.org', 'email', 'alice', '"+d.ServerName+"')")
		before := hashTree(t, d.Dir)

		// A run that fails half way (a media file Dendrite lost) writes
		// nothing, and runs again once the operator fixed the cause.
		file := firstMediaFile(t, d.Dir)
		if err := os.Rename(file, file+".away"); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(file, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := importdendrite.Run(context.Background(), importdendrite.Options{DendriteConfig: d.ConfigPath, DataDir: dataDir, DatabaseURL: dbURL}); err == nil {
			t.Fatal("an import that cannot read a media file succeeded")
		}
		assertEmpty(t, dbURL, dataDir)
		if err := os.Remove(file); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(file+".away", file); err != nil {
			t.Fatal(err)
		}

		var progress bytes.Buffer
		rep, err := importdendrite.Run(context.Background(), importdendrite.Options{DendriteConfig: d.ConfigPath, DataDir: dataDir, DatabaseURL: dbURL, Progress: &progress})
		if err != nil {
			t.Fatalf("import: %v\n%s", err, progress.String())
		}
		t.Log(progress.String())
		if want := []string{"column userapi_accounts.future_flag: unknown, not carried", "table userapi_future"}; len(rep.Unknown) != 2 ||
			rep.Unknown[0] != want[0] || !strings.HasPrefix(rep.Unknown[1], want[1]) {
			t.Errorf("unknown tables and columns: %q, want %q", rep.Unknown, want)
		}
		for _, n := range rep.NotCarried {
			if strings.Contains(n, "signature") || strings.Contains(n, "hashes to") {
				t.Errorf("an event failed the import's checks: %s", n)
			}
		}
		queued := false
		for _, n := range rep.Notes {
			queued = queued || strings.Contains(n, "queued for "+peer.Config.ServerName)
		}
		if !queued {
			t.Errorf("the report does not name the events queued for %s: %q", peer.Config.ServerName, rep.Notes)
		}
		if _, err := os.Stat(filepath.Join(dataDir, importdendrite.ReportFile)); err != nil {
			t.Errorf("no report file: %v", err)
		}
		// A second run refuses: the database is no longer empty.
		if _, err := importdendrite.Run(context.Background(), importdendrite.Options{DendriteConfig: d.ConfigPath, DataDir: dataDir, DatabaseURL: dbURL}); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Errorf("a second import into the same database: %v, want a refusal", err)
		}

		// Dendrite's files are as they were: the import only reads them.
		if after := hashTree(t, d.Dir); !reflect.DeepEqual(after, before) {
			t.Errorf("the import changed Dendrite's files:\nbefore %v\nafter  %v", before, after)
		}

		// Hearth starts from the config the import wrote (its identity and
		// application services), on the test's listeners.
		written, err := config.Load(filepath.Join(dataDir, "hearth.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.ServerName, c.DataDir, c.DatabaseURL = written.ServerName, written.DataDir, dbURL
			c.AppServiceConfigFiles = written.AppServiceConfigFiles
			c.FederationAllowCIDRs, c.FederationTLSInsecureSkipVerify = []string{"127.0.0.0/8", "::1/128"}, true
		})
		// Hearth takes over Dendrite's federation address.
		ln, err := net.Listen("tcp", "127.0.0.1:"+d.FedPort)
		if err != nil {
			t.Fatal(err)
		}
		fed := httptest.NewUnstartedServer(hs.FederationHandler())
		fed.Listener.Close()
		fed.Listener = ln
		fed.StartTLS()
		t.Cleanup(fed.Close)
		// The bridge's registration came along: its token works.
		if r := get(t, hs, "/_matrix/client/v3/account/whoami", bridgeASToken); r.JSON["user_id"] != "@bridgebot:"+d.ServerName {
			t.Errorf("the application service's whoami: %s", r.Body)
		}
		checkIdentity(t, hs, d)
		checkAccounts(t, hs, w)
		checkRooms(t, hs, w)
		checkMedia(t, hs, w)
		checkSyncContinues(t, hs, w)
		checkE2EEState(t, hs, w)
		checkE2EE(t, hs, w, w.bobOlm)
		checkFederation(t, hs, w)
		// bob accepts the invite he got while on Dendrite: a join over
		// federation from the imported server.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(w.peerRoom)+"?server_name="+url.QueryEscape(w.peer.Config.ServerName), w.bobTok, map[string]any{}), 200, "")
	})
}

func get(t *testing.T, hs *hearthtest.Server, path, token string) hearthtest.Response {
	t.Helper()
	r := hs.Do(t, "GET", path, token, nil)
	hearthtest.Expect(t, r, 200, "")
	return r
}

// checkIdentity: the same server name and signing key.
func checkIdentity(t *testing.T, hs *hearthtest.Server, d *dendrite) {
	r := hearthtest.Do(t, hs.Client, "GET", hs.FederationURL+"/_matrix/key/v2/server", "", nil)
	hearthtest.Expect(t, r, 200, "")
	if r.JSON["server_name"] != d.ServerName {
		t.Errorf("server_name %v, want %s", r.JSON["server_name"], d.ServerName)
	}
	keys, _ := r.JSON["verify_keys"].(map[string]any)
	k, _ := keys[string(d.Key.ID)].(map[string]any)
	if k == nil || k["key"] != d.Key.PublicBase64().Encode() {
		t.Errorf("verify_keys %v, want %s = %s", keys, d.Key.ID, d.Key.PublicBase64().Encode())
	}
	old, _ := r.JSON["old_verify_keys"].(map[string]any)
	if o, _ := old["ed25519:old1"].(map[string]any); o == nil || o["key"] != d.OldKey.PublicBase64().Encode() || o["expired_ts"] != float64(1700000000000) {
		t.Errorf("old_verify_keys %v, want ed25519:old1 = %s", old, d.OldKey.PublicBase64().Encode())
	}
}

// checkAccounts: every device's access token still works, passwords log
// in, admin and deactivated flags, profile, account data, push rules,
// filters, ignored users, pushers and registration tokens came along.
func checkAccounts(t *testing.T, hs *hearthtest.Server, w *world) {
	for _, c := range []struct{ tok, user, device string }{{w.aliceTok, w.alice, w.aliceDev}, {w.aliceTok2, w.alice, w.aliceDev2}, {w.bobTok, w.bob, w.bobDev}, {w.bobTok2, w.bob, ""}} {
		r := get(t, hs, "/_matrix/client/v3/account/whoami", c.tok)
		if r.JSON["user_id"] != c.user || (c.device != "" && r.JSON["device_id"] != c.device) {
			t.Errorf("whoami: %s, want %s %s", r.Body, c.user, c.device)
		}
	}
	r := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": password})
	hearthtest.Expect(t, r, 200, "")
	r = hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "wrong"})
	hearthtest.Expect(t, r, 403, "M_FORBIDDEN")
	r = hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": password})
	hearthtest.Expect(t, r, 403, "")
	// alice is an admin, bob is not.
	get(t, hs, "/_synapse/admin/v2/users/"+w.bob, w.aliceTok)
	hearthtest.Expect(t, hs.Do(t, "GET", "/_synapse/admin/v2/users/"+w.alice, w.bobTok, nil), 403, "M_FORBIDDEN")
	r = get(t, hs, "/_synapse/admin/v2/users/"+w.carol, w.aliceTok)
	if r.JSON["deactivated"] != true {
		t.Errorf("carol: %s, want deactivated", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/devices", w.aliceTok)
	devs, _ := r.JSON["devices"].([]any)
	names := map[string]any{}
	for _, d := range devs {
		m := d.(map[string]any)
		names[m["device_id"].(string)] = m["display_name"]
		if (m["device_id"] == w.aliceDev || m["device_id"] == w.aliceDev2) && m["last_seen_ts"] == nil {
			t.Errorf("device %v has no last_seen_ts", m["device_id"])
		}
	}
	if len(devs) != 3 || names[w.aliceDev2] != "Alice's phone" { // two from Dendrite, one login above
		t.Errorf("alice's devices: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/account/3pid", w.aliceTok)
	if !strings.Contains(string(r.Body), `"address":"alice@example.org"`) {
		t.Errorf("alice's email address: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/profile/"+w.alice, w.bobTok)
	if r.JSON["displayname"] != "Alice A." || r.JSON["avatar_url"] != w.pngMXC {
		t.Errorf("profile: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.alice+"/account_data/com.example.settings", w.aliceTok)
	if r.JSON["theme"] != "dark" {
		t.Errorf("global account data: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.alice+"/rooms/"+w.room1+"/account_data/com.example.room", w.aliceTok)
	if r.JSON["pinned"] != true {
		t.Errorf("room account data: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.alice+"/rooms/"+w.room1+"/tags", w.aliceTok)
	if !strings.Contains(string(r.Body), "m.favourite") {
		t.Errorf("tags: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.alice+"/rooms/"+w.room1+"/account_data/m.fully_read", w.aliceTok)
	if r.JSON["event_id"] != w.lastMessage {
		t.Errorf("read marker: %s, want %s", r.Body, w.lastMessage)
	}
	r = get(t, hs, "/_matrix/client/v3/pushrules/global/content/cats", w.aliceTok)
	if r.JSON["pattern"] != "cats" {
		t.Errorf("custom push rule: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled", w.aliceTok)
	if r.JSON["enabled"] != false {
		t.Errorf("disabled default push rule: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.alice+"/filter/"+w.filterID, w.aliceTok)
	if !strings.Contains(string(r.Body), `"limit":7`) {
		t.Errorf("filter %s: %s", w.filterID, r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/user/"+w.bob+"/account_data/m.ignored_user_list", w.bobTok)
	if !strings.Contains(string(r.Body), w.carol) {
		t.Errorf("ignored users: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/pushers", w.aliceTok)
	if !strings.Contains(string(r.Body), "pk-alice") {
		t.Errorf("pushers: %s", r.Body)
	}
	r = get(t, hs, "/_synapse/admin/v1/registration_tokens/invite-only-123", w.aliceTok)
	if r.JSON["uses_allowed"] != float64(5) {
		t.Errorf("registration token: %s", r.Body)
	}
}

// checkRooms: /messages, /state and the member lists answer as Dendrite
// did before the move; aliases and the directory came along.
func checkRooms(t *testing.T, hs *hearthtest.Server, w *world) {
	for _, room := range []string{w.room1, w.room2} {
		r := get(t, hs, "/_matrix/client/v3/rooms/"+room+"/messages?dir=b&limit=100", w.aliceTok)
		want, got := comparable(w.messages[room].(map[string]any)["chunk"]), comparable(r.JSON["chunk"])
		if !reflect.DeepEqual(got, want) {
			t.Errorf("/messages of %s differ:\n got %v\nwant %v", room, got, want)
		}
		var st any
		_ = json.Unmarshal(get(t, hs, "/_matrix/client/v3/rooms/"+room+"/state", w.aliceTok).Body, &st)
		if g, wnt := sortedComparable(st), sortedComparable(w.state[room]); !reflect.DeepEqual(g, wnt) {
			t.Errorf("/state of %s differs:\n got %v\nwant %v", room, g, wnt)
		}
		r = get(t, hs, "/_matrix/client/v3/rooms/"+room+"/joined_members", w.aliceTok)
		if g, wnt := keys(r.JSON["joined"]), keys(w.members[room].(map[string]any)["joined"]); !reflect.DeepEqual(g, wnt) {
			t.Errorf("members of %s: %v, want %v", room, g, wnt)
		}
	}
	// History visibility holds: bob, only invited to room2 (shared
	// history), sees on Hearth nothing Dendrite did not show him (Dendrite
	// shows an invitee his invite, Hearth answers 403 until he joins), and
	// never the message sent before his invite.
	r := hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+w.room2+"/messages?dir=b&limit=100", w.bobTok, nil)
	shown := map[string]bool{}
	for _, e := range comparable(w.bobSees.JSON["chunk"]) {
		shown[e] = true
	}
	for _, e := range comparable(r.JSON["chunk"]) {
		if !shown[e] {
			t.Errorf("bob, invited to %s, sees %s on Hearth, which Dendrite did not show him", w.room2, e)
		}
	}
	if strings.Contains(string(r.Body), "private hello") || strings.Contains(string(w.bobSees.Body), "private hello") {
		t.Errorf("bob sees room2's history from before his invite")
	}
	r = get(t, hs, "/_matrix/client/v3/directory/room/"+url.PathEscape("#general:"+hs.Config.ServerName), "")
	if r.JSON["room_id"] != w.room1 {
		t.Errorf("alias: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/publicRooms", w.bobTok)
	if !strings.Contains(string(r.Body), w.room1) {
		t.Errorf("public rooms: %s", r.Body)
	}
	// The redaction holds.
	r = get(t, hs, "/_matrix/client/v3/rooms/"+w.room1+"/event/"+w.redacted, w.aliceTok)
	if c, _ := r.JSON["content"].(map[string]any); len(c) != 0 {
		t.Errorf("redacted event has content: %s", r.Body)
	}
	// Bob's pending invite to room2 shows in his sync; room3 he forgot.
	r = get(t, hs, "/_matrix/client/v3/sync?timeout=0", w.bobTok2)
	var s struct {
		Rooms struct {
			Invite map[string]any `json:"invite"`
			Join   map[string]any `json:"join"`
			Leave  map[string]any `json:"leave"`
		} `json:"rooms"`
	}
	_ = json.Unmarshal(r.Body, &s)
	for _, room := range []string{w.room2, w.peerRoom} {
		if _, ok := s.Rooms.Invite[room]; !ok {
			t.Errorf("bob's invite to %s is not in his sync: %s", room, r.Body)
		}
	}
	if _, ok := s.Rooms.Join[w.room1]; !ok {
		t.Errorf("bob's room %s is not in his sync", w.room1)
	}
	// A new message goes into the imported DAG on top of Dendrite's head.
	r = hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/send/m.room.message/after-move", w.bobTok, map[string]any{"msgtype": "m.text", "body": "hello from hearth"})
	hearthtest.Expect(t, r, 200, "")
	// Bob's read receipt is in alice's sync.
	r = get(t, hs, "/_matrix/client/v3/sync?timeout=0", w.aliceTok)
	if !strings.Contains(string(r.Body), `"m.receipt"`) || !strings.Contains(string(r.Body), w.lastMessage) {
		t.Errorf("bob's receipt on %s is not in alice's sync", w.lastMessage)
	}
}

// comparable keeps what two servers must agree on about an event.
func comparable(v any) []string {
	list, _ := v.([]any)
	var out []string
	for _, e := range list {
		m := e.(map[string]any)
		c, _ := json.Marshal(m["content"])
		sk := ""
		if s, ok := m["state_key"].(string); ok {
			sk = "|" + s
		}
		out = append(out, fmt.Sprintf("%v %v %v %v%s %s", m["event_id"], m["type"], m["sender"], m["origin_server_ts"], sk, c))
	}
	return out
}

func sortedComparable(v any) []string {
	out := comparable(v)
	sort.Strings(out)
	return out
}

func keys(v any) []string {
	m, _ := v.(map[string]any)
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkMedia: every file downloads byte for byte; thumbnails are served.
func checkMedia(t *testing.T, hs *hearthtest.Server, w *world) {
	for mxc, want := range w.media {
		path := strings.TrimPrefix(mxc, "mxc://")
		req, _ := http.NewRequest("GET", hs.URL+"/_matrix/client/v1/media/download/"+path, nil)
		req.Header.Set("Authorization", "Bearer "+w.bobTok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(got, want) {
			t.Errorf("%s: %d, %d bytes, want %d bytes byte for byte", mxc, resp.StatusCode, len(got), len(want))
		}
	}
	req, _ := http.NewRequest("GET", hs.URL+"/_matrix/client/v1/media/thumbnail/"+strings.TrimPrefix(w.pngMXC, "mxc://")+"?width=32&height=32&method=crop", nil)
	req.Header.Set("Authorization", "Bearer "+w.bobTok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "image/") {
		t.Errorf("thumbnail: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// checkSyncContinues: bob's sync token saved on Dendrite continues on
// Hearth without a gap: the events sent after it, and nothing older.
func checkSyncContinues(t *testing.T, hs *hearthtest.Server, w *world) {
	r := get(t, hs, "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(w.bobSince), w.bobTok)
	var s struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events  []map[string]any `json:"events"`
					Limited bool             `json:"limited"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatal(err)
	}
	tl := s.Rooms.Join[w.room1].Timeline
	var ids []string
	for _, e := range tl.Events {
		ids = append(ids, e["event_id"].(string))
	}
	if tl.Limited || len(ids) < 2 || ids[0] != w.afterSince[0] {
		t.Errorf("sync from Dendrite's token %s: limited=%v events %v, want %s first (then what Hearth added)", w.bobSince, tl.Limited, ids, w.afterSince[0])
	}
}

// hashTree is the SHA-256 of every file under dir.
func hashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[strings.TrimPrefix(p, dir)] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func firstMediaFile(t *testing.T, dir string) string {
	t.Helper()
	var found string
	_ = filepath.WalkDir(filepath.Join(dir, "media_store"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && e.Name() == "file" && found == "" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatal("Dendrite stored no media file")
	}
	return found
}

// assertEmpty checks that a failed import left the Hearth database empty.
func assertEmpty(t *testing.T, dbURL, dataDir string) {
	t.Helper()
	db, err := storage.Open(context.Background(), dbURL, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	empty, err := storage.IsEmpty(context.Background(), db.Read())
	if err != nil || !empty {
		t.Fatalf("a failed import left rows behind (empty=%v, %v)", empty, err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, importdendrite.ReportFile)); err != nil {
		t.Errorf("a failed import wrote no report: %v", err)
	}
}

// checkFederation: the server that federated with Dendrite accepts a new
// event from the imported server (signed with the same key, on top of the
// same DAG).
func checkFederation(t *testing.T, hs *hearthtest.Server, w *world) {
	r := hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/send/m.room.message/to-peer", w.aliceTok, map[string]any{"msgtype": "m.text", "body": "hello peer, from hearth"})
	hearthtest.Expect(t, r, 200, "")
	id := r.JSON["event_id"].(string)
	// It also fetches the event Dendrite never managed to send it.
	waitFor(t, "the peer to accept the imported server's event and fetch the one it missed", func() bool {
		body := string(w.peer.Do(t, "GET", "/_matrix/client/v3/rooms/"+w.room1+"/messages?dir=b&limit=20", w.patTok, nil).Body)
		return strings.Contains(body, id) && strings.Contains(body, w.afterSince[0])
	})
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
