package clientapi_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// Delayed events (MSC4140) through the HTTP API, on the paths, parameters
// and shapes of Complement's tests/msc4140.

const delayedBase = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events"

func delayedSendPath(roomID, evType, txn string, delay any) string {
	return fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/%s/%s?org.matrix.msc4140.delay=%v", url.PathEscape(roomID), evType, txn, delay)
}

func delayedStatePath(roomID, evType, key string, delay any) string {
	return fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/%s/%s?org.matrix.msc4140.delay=%v", url.PathEscape(roomID), evType, key, delay)
}

func statePath(roomID, evType, key string) string {
	return fmt.Sprintf("/_matrix/client/v3/rooms/%s/state/%s/%s", url.PathEscape(roomID), evType, key)
}

func (u user) scheduleState(t *testing.T, roomID, key string, delayMS int, content map[string]any) string {
	t.Helper()
	r := u.do(t, "PUT", delayedStatePath(roomID, "com.example.test", key, delayMS), content)
	hearthtest.Expect(t, r, http.StatusOK, "")
	id, _ := r.JSON["delay_id"].(string)
	if id == "" || r.JSON["event_id"] != nil {
		t.Fatalf("scheduling answered %s, want only a delay_id", r.Body)
	}
	return id
}

// delayedList is the caller's delayed events (status "" or "finalised").
func (u user) delayedList(t *testing.T, status string) []map[string]any {
	t.Helper()
	path := delayedBase
	if status != "" {
		path += "?status=" + status
	}
	r := u.do(t, "GET", path, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	list, ok := r.JSON["delayed_events"].([]any)
	if !ok {
		t.Fatalf("no delayed_events array: %s", r.Body)
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		out[i] = e.(map[string]any)
	}
	return out
}

// delayedAction posts an action without an access token, as Complement
// does (the delay_id is the credential).
func delayedAction(t *testing.T, hs *hearthtest.Server, delayID, action, token string) hearthtest.Response {
	t.Helper()
	return hs.Do(t, "POST", delayedBase+"/"+url.PathEscape(delayID)+"/"+action, token, map[string]any{})
}

// waitDelayed polls cond every 50 ms until it holds or d passes.
func waitDelayed(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// countTimeline counts the room's events of evType whose content has
// key = value, over its whole history.
func (u user) countTimeline(t *testing.T, roomID, evType, key string, value any) int {
	t.Helper()
	r := u.messages(t, roomID, "dir=b&limit=1000")
	hearthtest.Expect(t, r, http.StatusOK, "")
	n := 0
	chunk, _ := r.JSON["chunk"].([]any)
	for _, e := range chunk {
		ev := e.(map[string]any)
		c, _ := ev["content"].(map[string]any)
		if ev["type"] == evType && fmt.Sprint(c[key]) == fmt.Sprint(value) {
			n++
		}
	}
	return n
}

func delayedRoom(t *testing.T, hs *hearthtest.Server) (alice, bob user, roomID string) {
	t.Helper()
	alice, bob = newUser(t, hs, "alice"), newUser(t, hs, "bob")
	roomID = alice.createRoom(t, map[string]any{"preset": "public_chat",
		"power_level_content_override": map[string]any{"events": map[string]int{"com.example.test": 0}}})
	hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
	return alice, bob, roomID
}

// A delayed message is not sent at once, is listed with MSC4140's shape,
// and is sent when its delay passes: it reaches /sync and /messages, and
// the listing moves it to the finalised ones with its event ID. A retry of
// the transaction answers the same delay_id; other users see nothing of it.
func TestDelayedEventsMessageFires(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, roomID := delayedRoom(t, hs)

		v := alice.do(t, "GET", "/_matrix/client/versions", nil)
		if f, _ := v.JSON["unstable_features"].(map[string]any); f["org.matrix.msc4140"] != true {
			t.Fatalf("/versions does not advertise org.matrix.msc4140: %s", v.Body)
		}
		if l := alice.delayedList(t, ""); len(l) != 0 {
			t.Fatalf("delayed events before any: %v", l)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", delayedBase, "", nil), http.StatusUnauthorized, "")

		since := alice.sync(t, "", "").JSON["next_batch"].(string)
		r := alice.do(t, "PUT", delayedSendPath(roomID, "m.room.message", "d1", 700), map[string]any{"msgtype": "m.text", "body": "later"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		delayID, _ := r.JSON["delay_id"].(string)
		if delayID == "" || r.JSON["event_id"] != nil {
			t.Fatalf("scheduling answered %s", r.Body)
		}
		// A retry of the transaction, even without a body, gets the same delay_id.
		again := alice.do(t, "PUT", delayedSendPath(roomID, "m.room.message", "d1", 700), nil)
		hearthtest.Expect(t, again, http.StatusOK, "")
		if again.JSON["delay_id"] != delayID {
			t.Fatalf("retry answered %s, want delay_id %s", again.Body, delayID)
		}

		list := alice.delayedList(t, "")
		if len(list) != 1 {
			t.Fatalf("want 1 scheduled delayed event, got %v", list)
		}
		d := list[0]
		content, _ := d["content"].(map[string]any)
		if d["delay_id"] != delayID || d["room_id"] != roomID || d["type"] != "m.room.message" || d["delay_ms"] != float64(700) ||
			d["scheduled_at"] == nil || content["body"] != "later" || d["state_key"] != nil || d["finalised_ts"] != nil {
			t.Fatalf("listed delayed event has the wrong shape: %v", d)
		}
		if alice.countTimeline(t, roomID, "m.room.message", "body", "later") != 0 {
			t.Fatal("the delayed message was sent at once")
		}
		// Other users see nothing of it and cannot act on it.
		if l := bob.delayedList(t, ""); len(l) != 0 {
			t.Fatalf("bob sees alice's delayed events: %v", l)
		}
		for _, action := range []string{"send", "cancel", "restart"} {
			hearthtest.Expect(t, delayedAction(t, hs, delayID, action, bob.token), http.StatusNotFound, "M_NOT_FOUND")
		}
		hearthtest.Expect(t, bob.do(t, "GET", delayedBase+"/"+delayID, nil), http.StatusNotFound, "M_NOT_FOUND")

		// It reaches alice's sync once its delay passes.
		var eventID string
		waitDelayed(t, 5*time.Second, "the delayed message in /sync", func() bool {
			s := alice.sync(t, since, "timeout=500")
			since = s.JSON["next_batch"].(string)
			for _, e := range timelineEvents(joinedRoom(t, s, roomID)) {
				if c, _ := e["content"].(map[string]any); e["type"] == "m.room.message" && c["body"] == "later" {
					eventID, _ = e["event_id"].(string)
					return true
				}
			}
			return false
		})
		if n := alice.countTimeline(t, roomID, "m.room.message", "body", "later"); n != 1 {
			t.Fatalf("the delayed message is in the room %d times, want 1", n)
		}
		// The row is finalised just after the send commits (a separate
		// transaction: the room core commits the event), so the list
		// empties a moment after the event shows in sync.
		waitDelayed(t, 5*time.Second, "the sent delayed event leaving the scheduled list", func() bool {
			return len(alice.delayedList(t, "")) == 0
		})
		one := alice.do(t, "GET", delayedBase+"/"+delayID, nil)
		hearthtest.Expect(t, one, http.StatusOK, "")
		if one.JSON["event_id"] != eventID || one.JSON["finalised_ts"] == nil || one.JSON["error"] != nil {
			t.Fatalf("finalised delayed event %s, want event_id %s and finalised_ts", one.Body, eventID)
		}
		fin := alice.delayedList(t, "finalised")
		if len(fin) != 1 || fin[0]["event_id"] != eventID {
			t.Fatalf("finalised list %v, want the sent event", fin)
		}
		// Sending again is a retry (200); cancelling a sent event conflicts.
		hearthtest.Expect(t, delayedAction(t, hs, delayID, "send", ""), http.StatusOK, "")
		hearthtest.Expect(t, delayedAction(t, hs, delayID, "cancel", ""), http.StatusConflict, "M_UNKNOWN")
		if n := alice.countTimeline(t, roomID, "m.room.message", "body", "later"); n != 1 {
			t.Fatalf("the delayed message is in the room %d times after a send retry, want 1", n)
		}
	})
}

func timelineEvents(room map[string]any) []map[string]any {
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	out := make([]map[string]any, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.(map[string]any))
	}
	return out
}

// Cancel, restart and send on delayed state events, with the management
// endpoints called without an access token as Complement does; unknown
// IDs and actions are 404.
func TestDelayedEventsCancelRestartSend(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, _, roomID := delayedRoom(t, hs)

		for _, action := range []string{"send", "cancel", "restart"} {
			hearthtest.Expect(t, delayedAction(t, hs, "abc", action, ""), http.StatusNotFound, "M_NOT_FOUND")
		}
		hearthtest.Expect(t, delayedAction(t, hs, "abc", "oops", ""), http.StatusNotFound, "")
		if r := hs.Do(t, "POST", delayedBase+"/abc", "", map[string]any{}); r.Status < 400 {
			t.Fatalf("an update without an action succeeded: %d %s", r.Status, r.Body)
		}

		// Cancelled: never sent.
		cancelled := alice.scheduleState(t, roomID, "to_never_send", 600, map[string]any{"setter": "none"})
		hearthtest.Expect(t, delayedAction(t, hs, cancelled, "cancel", ""), http.StatusOK, "")
		hearthtest.Expect(t, delayedAction(t, hs, cancelled, "cancel", ""), http.StatusOK, "") // a retry
		hearthtest.Expect(t, delayedAction(t, hs, cancelled, "restart", ""), http.StatusConflict, "M_UNKNOWN")
		if l := alice.delayedList(t, ""); len(l) != 0 {
			t.Fatalf("cancelled delayed event still listed: %v", l)
		}

		// Restarted: the timer starts again from the restart.
		restarted := alice.scheduleState(t, roomID, "restarted", 1000, map[string]any{"setter": "on_timeout"})
		time.Sleep(600 * time.Millisecond)
		hearthtest.Expect(t, delayedAction(t, hs, restarted, "restart", ""), http.StatusOK, "")
		restartedAt := time.Now()
		time.Sleep(700 * time.Millisecond) // past the first deadline, before the new one
		hearthtest.Expect(t, alice.do(t, "GET", statePath(roomID, "com.example.test", "restarted"), nil), http.StatusNotFound, "M_NOT_FOUND")
		if l := alice.delayedList(t, ""); len(l) != 1 || l[0]["delay_id"] != restarted {
			t.Fatalf("restarted delayed event not listed alone: %v", l)
		}

		// Sent on request, long before its time.
		sent := alice.scheduleState(t, roomID, "on_request", 100000, map[string]any{"setter": "on_send"})
		hearthtest.Expect(t, delayedAction(t, hs, sent, "send", ""), http.StatusOK, "")
		r := alice.do(t, "GET", statePath(roomID, "com.example.test", "on_request"), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["setter"] != "on_send" {
			t.Fatalf("state after the send action: %s", r.Body)
		}
		hearthtest.Expect(t, delayedAction(t, hs, sent, "cancel", ""), http.StatusConflict, "M_UNKNOWN")

		// The restarted one is sent at its new time, not before.
		waitDelayed(t, 5*time.Second, "the restarted delayed state event", func() bool {
			return alice.do(t, "GET", statePath(roomID, "com.example.test", "restarted"), nil).Status == http.StatusOK
		})
		if since := time.Since(restartedAt); since < time.Second {
			t.Fatalf("the restarted delayed event was sent %v after the restart, before its 1 s delay", since)
		}
		if l := alice.delayedList(t, ""); len(l) != 0 {
			t.Fatalf("delayed events left: %v", l)
		}
		fin := alice.delayedList(t, "finalised")
		outcomes := map[string]string{}
		for _, d := range fin {
			id := d["delay_id"].(string)
			switch {
			case d["event_id"] != nil:
				outcomes[id] = "sent"
			case d["error"] != nil:
				outcomes[id] = "failed"
			default:
				outcomes[id] = "cancelled"
			}
			if d["state_key"] == nil || d["finalised_ts"] == nil {
				t.Fatalf("finalised delayed state event lacks state_key or finalised_ts: %v", d)
			}
		}
		if outcomes[cancelled] != "cancelled" || outcomes[restarted] != "sent" || outcomes[sent] != "sent" {
			t.Fatalf("finalised outcomes %v", outcomes)
		}
	})
}

// Up-front checks: the maximum delay (400 M_MAX_DELAY_EXCEEDED), a delay
// that is not a positive integer, an unknown room, a room the sender is
// not in; and with delayed events off, /versions does not advertise them.
func TestDelayedEventsRefused(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.MaxEventDelayMS = 10_000 })
		alice, _, roomID := delayedRoom(t, hs)
		carol := newUser(t, hs, "carol")

		r := alice.do(t, "PUT", delayedSendPath(roomID, "m.room.message", "big", 10_001), map[string]any{"body": "x"})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_MAX_DELAY_EXCEEDED")
		if r.JSON["max_delay"] != float64(10_000) {
			t.Fatalf("max_delay missing: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "PUT", delayedStatePath(roomID, "com.example.test", "k", 10_001), map[string]any{}),
			http.StatusBadRequest, "M_MAX_DELAY_EXCEEDED")
		for _, bad := range []string{"0", "-5", "abc", "1.5"} {
			hearthtest.Expect(t, alice.do(t, "PUT", delayedSendPath(roomID, "m.room.message", "bad"+bad, bad), map[string]any{"body": "x"}),
				http.StatusBadRequest, "M_INVALID_PARAM")
		}
		hearthtest.Expect(t, alice.do(t, "PUT", delayedSendPath("!nowhere:hearth.test", "m.room.message", "t", 1000), map[string]any{"body": "x"}),
			http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, carol.do(t, "PUT", delayedSendPath(roomID, "m.room.message", "t", 1000), map[string]any{"body": "x"}),
			http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, carol.do(t, "PUT", delayedStatePath(roomID, "com.example.test", "k", 1000), map[string]any{}),
			http.StatusForbidden, "M_FORBIDDEN")
		if l := alice.delayedList(t, ""); len(l) != 0 {
			t.Fatalf("refused requests scheduled %v", l)
		}

		off := hearthtest.NewServer(t, b, func(c *config.Config) { c.MaxEventDelayMS = 0 })
		v := off.Do(t, "GET", "/_matrix/client/versions", "", nil)
		if f, _ := v.JSON["unstable_features"].(map[string]any); f["org.matrix.msc4140"] != nil {
			t.Fatalf("/versions advertises org.matrix.msc4140 while off: %s", v.Body)
		}
	})
}

// A newer state event from another user cancels a delayed state event for
// the same room, type and state key (with M_CANCELLED_BY_STATE_UPDATE); the
// delayed event's own sender updating the state leaves it scheduled.
func TestDelayedStateCancelledByOthersState(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, roomID := delayedRoom(t, hs)
		id := alice.scheduleState(t, roomID, "shared", 60_000, map[string]any{"v": "delayed"})

		hearthtest.Expect(t, alice.do(t, "PUT", statePath(roomID, "com.example.test", "shared"), map[string]any{"v": "alice now"}), http.StatusOK, "")
		time.Sleep(300 * time.Millisecond)
		if l := alice.delayedList(t, ""); len(l) != 1 {
			t.Fatalf("alice's own state update cancelled her delayed event: %v", l)
		}
		hearthtest.Expect(t, bob.do(t, "PUT", statePath(roomID, "com.example.test", "shared"), map[string]any{"v": "bob now"}), http.StatusOK, "")
		waitDelayed(t, 5*time.Second, "the delayed state event cancelled", func() bool { return len(alice.delayedList(t, "")) == 0 })
		one := alice.do(t, "GET", delayedBase+"/"+id, nil)
		hearthtest.Expect(t, one, http.StatusOK, "")
		if e, _ := one.JSON["error"].(map[string]any); e["errcode"] != "M_CANCELLED_BY_STATE_UPDATE" || one.JSON["event_id"] != nil {
			t.Fatalf("cancelled delayed event: %s", one.Body)
		}
	})
}

// A delayed event due 6 s after scheduling survives a restart half a
// second in and is sent once, after the restart (issue 15's 10 s / kill at
// 5 s scenario, scaled down, with an in-process restart). The margins are
// wide so that a loaded machine (CI runs with -race on two cores) cannot
// reach the due time before the restart is checked.
func TestDelayedEventsSurviveRestart(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, _, roomID := delayedRoom(t, hs)
		r := alice.do(t, "PUT", delayedSendPath(roomID, "com.example.test", "restart1", 6000), map[string]any{"n": "restart"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		delayID := r.JSON["delay_id"].(string)
		time.Sleep(500 * time.Millisecond)
		hs.Restart(t)
		if n := alice.countTimeline(t, roomID, "com.example.test", "n", "restart"); n != 0 {
			t.Fatalf("sent before its time: %d", n)
		}
		if l := alice.delayedList(t, ""); len(l) != 1 || l[0]["delay_id"] != delayID {
			t.Fatalf("the delayed event did not survive the restart: %v", l)
		}
		waitDelayed(t, 20*time.Second, "the delayed event after the restart", func() bool {
			return alice.countTimeline(t, roomID, "com.example.test", "n", "restart") > 0
		})
		time.Sleep(500 * time.Millisecond)
		if n := alice.countTimeline(t, roomID, "com.example.test", "n", "restart"); n != 1 {
			t.Fatalf("the delayed event was sent %d times, want 1", n)
		}
	})
}

// A process that dies between sending a delayed event and finalising its
// row leaves the row claimed (sending): the next scheduler takes the claim
// again, and the room core answers the event already sent for the
// delay_id's transaction, so the event is not sent twice. A claim left
// before the send (the event never sent) is sent then, once.
func TestDelayedEventsClaimLeftByCrash(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, _, roomID := delayedRoom(t, hs)
		schedule := func(value string, delay int) string {
			r := alice.do(t, "PUT", delayedSendPath(roomID, "com.example.test", value, delay), map[string]any{"n": value})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["delay_id"].(string)
		}
		sent := schedule("sent-then-crash", 100000)
		hearthtest.Expect(t, delayedAction(t, hs, sent, "send", ""), http.StatusOK, "")
		first := alice.do(t, "GET", delayedBase+"/"+sent, nil).JSON["event_id"]
		unsent := schedule("claimed-then-crash", 100000)
		ctx := context.Background()
		// As the crash left them: claimed, not finalised.
		err := hs.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `UPDATE delayed_events SET status = 'sending', claimed_ts = 1, event_id = NULL, finalised_ts = NULL
				WHERE delay_id IN ($1, $2)`, sent, unsent)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		hs.Restart(t)
		waitDelayed(t, 5*time.Second, "the claims taken again", func() bool {
			a := alice.do(t, "GET", delayedBase+"/"+sent, nil)
			u := alice.do(t, "GET", delayedBase+"/"+unsent, nil)
			return a.JSON["finalised_ts"] != nil && u.JSON["finalised_ts"] != nil
		})
		if again := alice.do(t, "GET", delayedBase+"/"+sent, nil).JSON["event_id"]; again != first {
			t.Fatalf("the retaken claim finalised as %v, want the event first sent, %v", again, first)
		}
		for _, v := range []string{"sent-then-crash", "claimed-then-crash"} {
			if n := alice.countTimeline(t, roomID, "com.example.test", "n", v); n != 1 {
				t.Fatalf("%s is in the room %d times, want 1", v, n)
			}
		}
	})
}
