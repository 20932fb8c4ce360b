package push_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/push"
	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
)

// Tests of notification evaluation, counting and delivery below HTTP: the
// room core and push worker over real storage (a temporary SQLite
// database, and PostgreSQL when HEARTH_TEST_POSTGRES is set), wired as the
// homeserver wires them.

const (
	alice = "@alice:hearth.test"
	bob   = "@bob:hearth.test"
	carol = "@carol:hearth.test"
)

type env struct {
	db    *storage.DB
	rooms *rooms.Rooms
	push  *push.Push
}

func newEnv(t *testing.T, b hearthtest.Backend) env {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, hearthtest.DatabaseURL(t, b), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	// Users with profiles: their display names go into their joins.
	err = db.WriteTx(ctx, func(tx *sql.Tx) error {
		for _, u := range []struct{ id, local, name string }{{alice, "alice", "Alice"}, {bob, "bob", "Bob"}, {carol, "carol", "Carol"}} {
			if err := storage.InsertUser(ctx, tx, storage.User{UserID: u.id, Localpart: u.local, CreatedTS: 1}, u.name); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	rs := rooms.New(db, "hearth.test", key, log)
	p, err := push.New(push.Deps{DB: db, Rooms: rs, ServerName: "hearth.test", Log: log, GatewayAllowCIDRs: []string{"127.0.0.0/8"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	p.SetBackoff(2*time.Millisecond, 20*time.Millisecond)
	rs.SetTxHook(p.Record)
	rs.Observe(p.Observe)
	return env{db: db, rooms: rs, push: p}
}

// room makes a public room of alice with the given users joined.
func (e env) room(t *testing.T, members ...string) string {
	t.Helper()
	ctx := context.Background()
	roomID, err := e.rooms.Create(ctx, rooms.CreateRequest{Creator: alice, Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range members {
		if _, err := e.rooms.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: u, Target: u, Membership: spec.Join}); err != nil {
			t.Fatal(err)
		}
	}
	return roomID
}

// send sends an event and waits until push has evaluated it.
func (e env) send(t *testing.T, roomID, sender, typ string, content map[string]any) *rooms.Event {
	t.Helper()
	b, _ := json.Marshal(content)
	evs, err := e.rooms.Send(context.Background(), roomID, rooms.Proto{Sender: sender, Type: typ, Content: b})
	if err != nil {
		t.Fatal(err)
	}
	e.flush(t)
	return evs[0]
}

func (e env) text(t *testing.T, roomID, sender, body string) *rooms.Event {
	t.Helper()
	return e.send(t, roomID, sender, "m.room.message", map[string]any{"msgtype": "m.text", "body": body})
}

func (e env) flush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.push.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// notification is what the store holds for user and event: whether there
// is one, and whether it highlights.
func (e env) notification(t *testing.T, user string, ev *rooms.Event) (notified, highlight bool) {
	t.Helper()
	ns, err := storage.ListNotifications(context.Background(), e.db.Read(), user, ev.StreamPos+1, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) == 0 || ns[0].EventID != ev.EventID {
		return false, false
	}
	return true, ns[0].Highlight
}

func (e env) counts(t *testing.T, user, roomID string) (notif, highlight int, perThread map[string][2]int) {
	t.Helper()
	n, h, per, err := e.push.UnreadCounts(context.Background(), user, roomID)
	if err != nil {
		t.Fatal(err)
	}
	return n, h, per
}

func (e env) receipt(t *testing.T, user, roomID, thread string, ev *rooms.Event) {
	t.Helper()
	if _, err := e.db.PutReceipt(context.Background(), storage.Receipt{RoomID: roomID, UserID: user, Type: "m.read",
		ThreadID: thread, EventID: ev.EventID, TS: time.Now().UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	e.push.ReadReceipt(user)
	e.flush(t)
}

// The default rules: every message notifies the other members (never the
// sender); a mention by m.mentions or (without m.mentions) by display name
// highlights only the mentioned; an encrypted event notifies; @room
// highlights everyone only from a sender with the room's notification
// power; a state change like a topic does not notify.
func TestDefaultRules(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		e := newEnv(t, b)
		roomID := e.room(t, bob, carol)
		type want struct{ notify, highlight bool }
		check := func(what string, ev *rooms.Event, wants map[string]want) {
			t.Helper()
			for user, w := range wants {
				n, h := e.notification(t, user, ev)
				if n != w.notify || h != w.highlight {
					t.Fatalf("%s, for %s: notify %v highlight %v; want %v %v", what, user, n, h, w.notify, w.highlight)
				}
			}
		}
		plain := e.text(t, roomID, alice, "hello everyone")
		check("a plain message", plain, map[string]want{alice: {}, bob: {true, false}, carol: {true, false}})

		mention := e.send(t, roomID, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "over to you",
			"m.mentions": map[string]any{"user_ids": []string{bob}}})
		check("an m.mentions mention of bob", mention, map[string]want{alice: {}, bob: {true, true}, carol: {true, false}})

		byName := e.text(t, roomID, alice, "what do you think, Bob?")
		check("bob's display name in the body", byName, map[string]want{bob: {true, true}, carol: {true, false}})

		// With m.mentions present, the body's names no longer count.
		explicit := e.send(t, roomID, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "Bob and Carol",
			"m.mentions": map[string]any{"user_ids": []string{carol}}})
		check("m.mentions of carol naming bob in the body", explicit, map[string]want{bob: {true, false}, carol: {true, true}})

		encrypted := e.send(t, roomID, alice, "m.room.encrypted", map[string]any{"algorithm": "m.megolm.v1.aes-sha2",
			"ciphertext": "AwgAEn", "sender_key": "abc", "device_id": "DEV", "session_id": "s"})
		check("an encrypted event", encrypted, map[string]want{alice: {}, bob: {true, false}, carol: {true, false}})

		// @room from alice (power 100) highlights everyone; from carol
		// (power 0, below notifications.room 50) it does not.
		room := e.send(t, roomID, alice, "m.room.message", map[string]any{"msgtype": "m.text", "body": "@room lunch",
			"m.mentions": map[string]any{"room": true}})
		check("@room from an admin", room, map[string]want{bob: {true, true}, carol: {true, true}})
		weak := e.send(t, roomID, carol, "m.room.message", map[string]any{"msgtype": "m.text", "body": "@room hi",
			"m.mentions": map[string]any{"room": true}})
		check("@room from a member without the power", weak, map[string]want{alice: {true, false}, bob: {true, false}, carol: {}})

		// State changes like a topic do not notify.
		topic := "new topic"
		topicJSON, _ := json.Marshal(map[string]string{"topic": topic})
		empty := ""
		evs, err := e.rooms.Send(context.Background(), roomID, rooms.Proto{Sender: alice, Type: "m.room.topic", StateKey: &empty, Content: topicJSON})
		if err != nil {
			t.Fatal(err)
		}
		e.flush(t)
		check("a topic change", evs[0], map[string]want{bob: {}, carol: {}})

		n, h, _ := e.counts(t, bob, roomID)
		if n != 7 || h != 3 {
			t.Fatalf("bob's counts %d/%d, want 7 notifications, 3 highlights", n, h)
		}
	})
}

// A room rule with no actions silences a room's messages for its user
// but not mentions of them (override rules, where mentions live, come
// first); an override rule on the room (a client's "mute") silences
// everything. Other members and the user's other rooms are unaffected,
// and removing the rules restores notifications.
func TestMutedRoomDoesNotNotify(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		e := newEnv(t, b)
		ctx := context.Background()
		muted, other := e.room(t, bob, carol), e.room(t, bob)
		setRules := func(u pushrules.UserRules) {
			t.Helper()
			content, _ := json.Marshal(u)
			if _, err := e.db.PutAccountData(ctx, bob, "", "m.push_rules", content); err != nil {
				t.Fatal(err)
			}
			e.push.RulesChanged(bob)
		}
		notifies := func(user string, ev *rooms.Event) bool {
			t.Helper()
			n, _ := e.notification(t, user, ev)
			return n
		}
		none := &[]pushrules.Action{}
		var rules pushrules.UserRules
		if err := rules.Put(pushrules.Room, muted, pushrules.NewRule{Actions: none}, "", ""); err != nil {
			t.Fatal(err)
		}
		setRules(rules)
		ev := e.text(t, muted, alice, "anyone?")
		if notifies(bob, ev) {
			t.Fatal("a room with a silent room rule notified bob")
		}
		if !notifies(carol, ev) {
			t.Fatal("bob's room rule silenced carol")
		}
		if n, _, _ := e.counts(t, bob, muted); n != 0 {
			t.Fatalf("bob's count in the silenced room: %d", n)
		}
		if n, h := e.notification(t, bob, e.text(t, muted, alice, "anyone, Bob?")); !n || !h {
			t.Fatal("a room rule silenced a mention of bob, which override rules decide")
		}
		if !notifies(bob, e.text(t, other, alice, "here")) {
			t.Fatal("a room rule silenced another room")
		}

		pattern := muted
		conds := []pushrules.Condition{{Kind: "event_match", Key: "room_id", Pattern: &pattern}}
		if err := rules.Put(pushrules.Override, muted, pushrules.NewRule{Actions: none, Conditions: &conds}, "", ""); err != nil {
			t.Fatal(err)
		}
		setRules(rules)
		if notifies(bob, e.text(t, muted, alice, "anyone, Bob?")) {
			t.Fatal("a muted room (override rule) notified bob of his name")
		}
		if !notifies(bob, e.text(t, other, alice, "still here")) {
			t.Fatal("muting one room silenced another")
		}

		if err := rules.Delete(pushrules.Room, muted); err != nil {
			t.Fatal(err)
		}
		if err := rules.Delete(pushrules.Override, muted); err != nil {
			t.Fatal(err)
		}
		setRules(rules)
		if !notifies(bob, e.text(t, muted, alice, "unmuted")) {
			t.Fatal("no notification after unmuting")
		}
	})
}

// Counts are per room and per thread; a threaded receipt clears its
// thread only, an unthreaded one everything up to its event, and a
// receipt in one room leaves the other's counts alone.
func TestCountsPerRoomAndThread(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		e := newEnv(t, b)
		roomID, other := e.room(t, bob, carol), e.room(t, bob, carol)
		root := e.text(t, roomID, alice, "thread root")
		inThread := func(body string, mention bool) *rooms.Event {
			content := map[string]any{"msgtype": "m.text", "body": body,
				"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.EventID}}
			if mention {
				content["m.mentions"] = map[string]any{"user_ids": []string{bob}}
			}
			return e.send(t, roomID, alice, "m.room.message", content)
		}
		inThread("reply 1", false)
		t2 := inThread("reply 2", true)
		main := e.text(t, roomID, alice, "main timeline")
		e.text(t, other, alice, "elsewhere")
		e.text(t, other, alice, "elsewhere again")

		n, h, per := e.counts(t, bob, roomID)
		if n != 4 || h != 1 || per[push.MainThread] != [2]int{2, 0} || per[root.EventID] != [2]int{2, 1} {
			t.Fatalf("before reading: %d/%d %v", n, h, per)
		}
		if n, _, _ := e.counts(t, bob, other); n != 2 {
			t.Fatalf("the other room: %d", n)
		}
		// Reading the thread clears the thread, not the main timeline.
		e.receipt(t, bob, roomID, root.EventID, t2)
		n, h, per = e.counts(t, bob, roomID)
		if n != 2 || h != 0 || per[push.MainThread] != [2]int{2, 0} || per[root.EventID] != [2]int{} {
			t.Fatalf("after reading the thread: %d/%d %v", n, h, per)
		}
		// An unthreaded receipt clears up to its event in every thread.
		e.receipt(t, bob, roomID, "", main)
		if n, h, _ := e.counts(t, bob, roomID); n != 0 || h != 0 {
			t.Fatalf("after an unthreaded receipt: %d/%d", n, h)
		}
		if n, _, _ := e.counts(t, bob, other); n != 2 {
			t.Fatalf("reading one room changed the other: %d", n)
		}
		// Carol read nothing; a new message counts for bob again.
		if n, _, _ := e.counts(t, carol, roomID); n != 4 {
			t.Fatalf("carol's count: %d", n)
		}
		e.text(t, roomID, alice, "new")
		if n, _, _ := e.counts(t, bob, roomID); n != 1 {
			t.Fatalf("after a new message: %d", n)
		}
	})
}

// gateway is a push gateway (Push Gateway API) on a real HTTP listener,
// recording the notifications it receives.
type gateway struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []map[string]any
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		if r.URL.Path != "/_matrix/push/v1/notify" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		g.mu.Lock()
		g.got = append(g.got, body.Notification)
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"rejected":[]}`))
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) wait(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		got := append([]map[string]any(nil), g.got...)
		g.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway got %d notifications, want %d: %v", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A notification reaches the user's pusher's gateway with the event, the
// unread count and the pusher's key; reading it sends a badge update
// with the count at zero; a user without notifications gets nothing.
func TestPushReachesGateway(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		e := newEnv(t, b)
		ctx := context.Background()
		g := newGateway(t)
		data, _ := json.Marshal(map[string]string{"url": g.srv.URL + "/_matrix/push/v1/notify", "format": "event_id_only"})
		if err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.PutPusher(ctx, tx, storage.Pusher{UserID: bob, DeviceID: "PHONE", Kind: "http", AppID: "org.example.app",
				PushKey: "bobs-phone", PushKeyTS: 1, AppDisplayName: "App", DeviceDisplayName: "Phone", Lang: "en", Data: string(data)}, false)
		}); err != nil {
			t.Fatal(err)
		}
		roomID := e.room(t, bob)
		ev := e.text(t, roomID, alice, "ping")
		got := g.wait(t, 1)[0]
		devices, _ := got["devices"].([]any)
		if got["event_id"] != ev.EventID || got["room_id"] != roomID || len(devices) != 1 {
			t.Fatalf("notification %v", got)
		}
		dev, _ := devices[0].(map[string]any)
		if dev["pushkey"] != "bobs-phone" || dev["app_id"] != "org.example.app" {
			t.Fatalf("device %v", dev)
		}
		if d, _ := dev["data"].(map[string]any); d["format"] != "event_id_only" || d["url"] != nil {
			t.Fatalf("device data %v: want format forwarded and url kept back", d)
		}
		if counts, _ := got["counts"].(map[string]any); counts["unread"] != float64(1) {
			t.Fatalf("counts %v", got["counts"])
		}
		e.receipt(t, bob, roomID, "", ev)
		badge := g.wait(t, 2)[1]
		if counts, _ := badge["counts"].(map[string]any); counts["unread"] != float64(0) || badge["event_id"] != nil {
			t.Fatalf("badge update %v", badge)
		}
		// Bob's own message notifies alice, who has no pusher: nothing more
		// reaches the gateway.
		e.text(t, roomID, bob, "pong")
		time.Sleep(100 * time.Millisecond)
		if n := len(g.wait(t, 2)); n != 2 {
			t.Fatalf("gateway got %d notifications, want 2", n)
		}
	})
}
