package clientapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// Tests of evaluation by rule group (docs/performance.md, "Push in big
// rooms") through the server: members with the server-default rules share
// one stored outcome per event, a member with rules of their own (a
// keyword) another, and mentions, display names and receipts stay exact
// for each member.

// counts is a member's unread_notifications in a room from a fresh
// initial sync.
func (u user) counts(t *testing.T, roomID string) (notif, highlight float64) {
	t.Helper()
	c, _ := unread(t, u.sync(t, "", ""), roomID)
	n, _ := c["notification_count"].(float64)
	h, _ := c["highlight_count"].(float64)
	return n, h
}

func expectUnread(t *testing.T, who string, u user, roomID string, notif, highlight float64) {
	t.Helper()
	if n, h := u.counts(t, roomID); n != notif || h != highlight {
		t.Fatalf("%s: counts %v/%v, want %v/%v", who, n, h, notif, highlight)
	}
}

func (u user) notificationBodies(t *testing.T, query string) []string {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/notifications"+query, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	var out []string
	for _, n := range r.JSON["notifications"].([]any) {
		out = append(out, fmt.Sprint(path(n, "event", "content", "body")))
	}
	return out
}

func TestKeywordUserAmongDefaultUsers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob, carol, dave := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol"), newUser(t, hs, "dave")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		for _, u := range []user{bob, carol, dave} {
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
		}
		hearthtest.Expect(t, dave.do(t, "PUT", "/_matrix/client/v3/profile/"+dave.id+"/displayname", map[string]any{"displayname": "Dave Grohl"}), http.StatusOK, "")
		// Carol's keyword: "lunch" notifies her with a highlight.
		hearthtest.Expect(t, carol.do(t, "PUT", "/_matrix/client/v3/pushrules/global/content/lunch", map[string]any{
			"pattern": "lunch", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}},
		}), http.StatusOK, "")

		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "hello"})
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "Lunch at noon?"})
		for _, c := range []struct {
			who     string
			u       user
			n, h    float64
			bodies  []string
			hlights []string
		}{
			{"bob", bob, 2, 0, []string{"Lunch at noon?", "hello"}, nil},
			{"carol", carol, 2, 1, []string{"Lunch at noon?", "hello"}, []string{"Lunch at noon?"}},
			{"dave", dave, 2, 0, []string{"Lunch at noon?", "hello"}, nil},
		} {
			expectUnread(t, c.who, c.u, roomID, c.n, c.h)
			if got := c.u.notificationBodies(t, ""); fmt.Sprint(got) != fmt.Sprint(c.bodies) {
				t.Fatalf("%s notifications: %v", c.who, got)
			}
			if got := c.u.notificationBodies(t, "?only=highlight"); fmt.Sprint(got) != fmt.Sprint(c.hlights) {
				t.Fatalf("%s highlights: %v", c.who, got)
			}
		}

		// Dave by display name (no m.mentions), Bob by m.mentions, Carol's
		// keyword in a mention of Bob: each highlights only its member.
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "thanks, dave grohl!"})
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "bob: lunch?", "m.mentions": map[string]any{"user_ids": []any{bob.id}}})
		expectUnread(t, "bob", bob, roomID, 4, 1)
		expectUnread(t, "carol", carol, roomID, 4, 2)
		expectUnread(t, "dave", dave, roomID, 4, 1)
		// A sender's own message counts for the others only.
		carol.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "lunch!"})
		expectUnread(t, "carol", carol, roomID, 4, 2)
		expectUnread(t, "bob", bob, roomID, 5, 1)

		// Bob turns messages off: what he had stays unread, new messages
		// do not count, a mention still does.
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/pushrules/global/underride/.m.rule.message/enabled", map[string]any{"enabled": false}), http.StatusOK, "")
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "quiet now"})
		expectUnread(t, "bob", bob, roomID, 5, 1)
		last := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "bob?", "m.mentions": map[string]any{"user_ids": []any{bob.id}}})
		expectUnread(t, "bob", bob, roomID, 6, 2)
		expectUnread(t, "dave", dave, roomID, 7, 1)

		// Receipts: Dave reads up to the keyword message of Carol's; Bob
		// reads everything.
		list := dave.do(t, "GET", "/_matrix/client/v3/notifications", nil).JSON["notifications"].([]any)
		if body := path(list[4], "event", "content", "body"); body != "thanks, dave grohl!" {
			t.Fatalf("dave's notifications: %v", list)
		}
		mid := path(list[4], "event", "event_id").(string)
		hearthtest.Expect(t, dave.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(mid), map[string]any{}), http.StatusOK, "")
		expectUnread(t, "dave", dave, roomID, 4, 0)
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}), http.StatusOK, "")
		expectUnread(t, "bob", bob, roomID, 0, 0)
		if got := bob.notificationBodies(t, ""); len(got) != 6 || got[0] != "bob?" {
			t.Fatalf("bob's notifications after reading: %v", got)
		}

		// Dave leaves and comes back: what was sent while he was away is
		// not his; what he left unread still is.
		hearthtest.Expect(t, dave.member(t, roomID, "leave", nil), http.StatusOK, "")
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "while dave was away"})
		hearthtest.Expect(t, dave.member(t, roomID, "join", nil), http.StatusOK, "")
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "welcome back"})
		expectUnread(t, "dave", dave, roomID, 5, 0)
		if got := dave.notificationBodies(t, "?limit=2"); fmt.Sprint(got) != "[welcome back bob?]" {
			t.Fatalf("dave's notifications: %v", got)
		}
	})
}

// TestNotificationsPagingAcrossGroupsAndOwnRows: /notifications merges
// the rows of a member's group with their own (a mention) newest first,
// page by page, without losing or repeating one.
func TestNotificationsPagingAcrossGroupsAndOwnRows(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		room1 := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		room2 := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		for _, r := range []string{room1, room2} {
			hearthtest.Expect(t, bob.member(t, r, "join", nil), http.StatusOK, "")
		}
		var want []string
		for i := 0; i < 7; i++ {
			body := fmt.Sprintf("m%d", i)
			content := map[string]any{"msgtype": "m.text", "body": body}
			if i%3 == 0 {
				content["m.mentions"] = map[string]any{"user_ids": []any{bob.id}}
			}
			alice.sendContent(t, []string{room1, room2}[i%2], content)
			want = append([]string{body}, want...)
		}
		var got []string
		from := ""
		for pages := 0; pages < 10; pages++ {
			q := "?limit=3"
			if from != "" {
				q += "&from=" + url.QueryEscape(from)
			}
			r := bob.do(t, "GET", "/_matrix/client/v3/notifications"+q, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			for _, n := range r.JSON["notifications"].([]any) {
				got = append(got, fmt.Sprint(path(n, "event", "content", "body")))
			}
			next, _ := r.JSON["next_token"].(string)
			if next == "" {
				break
			}
			from = next
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("pages: %v, want %v", got, want)
		}
		if hl := bob.notificationBodies(t, "?only=highlight"); fmt.Sprint(hl) != "[m6 m3 m0]" {
			t.Fatalf("highlights: %v", hl)
		}
		expectUnread(t, "bob in room 1", bob, room1, 4, 2)
		expectUnread(t, "bob in room 2", bob, room2, 3, 1)
	})
}

// TestCountsWithoutThePushWorker: counts are stored with the events, so a
// sync right after a send has them even while the push worker (gateway
// delivery) is stopped.
func TestCountsWithoutThePushWorker(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		tok := bob.sync(t, "", "").JSON["next_batch"].(string)
		hs.Push.Close()
		first := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "one"})
		r := bob.sync(t, tok, "timeout=5000")
		c, _ := unread(t, r, roomID)
		expectCounts(t, c, 1, 0)
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "in a thread", "m.mentions": map[string]any{"user_ids": []any{bob.id}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": first}})
		threadFilter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		c, threads := unread(t, bob.sync(t, r.JSON["next_batch"].(string), "timeout=5000&filter="+threadFilter), roomID)
		expectCounts(t, c, 1, 0)
		if tc, _ := threads[first].(map[string]any); tc["notification_count"] != 1.0 || tc["highlight_count"] != 1.0 {
			t.Fatalf("thread counts: %v", threads)
		}
	})
}

// TestRotationKeepsCounts: rows older than the retention window move
// into per-member summaries; counts stay what they were, highlights stay
// listed, a receipt in a thread reads that thread's summary only, and a
// second rotation adds to a summary still unread.
func TestRotationKeepsCounts(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		m1 := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m1"})
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m2", "m.mentions": map[string]any{"user_ids": []any{bob.id}}})
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m3"})
		m4 := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m4", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": m1}})
		threads := func(u user) map[string][2]int {
			t.Helper()
			_, _, per, err := hs.Push.UnreadCounts(context.Background(), u.id, roomID)
			if err != nil {
				t.Fatal(err)
			}
			return per
		}
		rotate := func() {
			t.Helper()
			if err := hs.Push.Rotate(context.Background(), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
		expectUnread(t, "bob", bob, roomID, 4, 1)
		wantThreads := fmt.Sprint(map[string][2]int{"main": {3, 1}, m1: {1, 0}})
		if got := fmt.Sprint(threads(bob)); got != wantThreads {
			t.Fatalf("bob's threads: %v", got)
		}
		rotate()
		expectUnread(t, "bob", bob, roomID, 4, 1)
		expectUnread(t, "carol", carol, roomID, 4, 0)
		if got := fmt.Sprint(threads(bob)); got != wantThreads {
			t.Fatalf("bob's threads after rotation: %v", got)
		}
		// Outside the window only highlights are listed.
		if got := bob.notificationBodies(t, ""); fmt.Sprint(got) != "[m2]" {
			t.Fatalf("bob's notifications after rotation: %v", got)
		}
		if got := carol.notificationBodies(t, ""); len(got) != 0 {
			t.Fatalf("carol's notifications after rotation: %v", got)
		}
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m5"})
		expectUnread(t, "bob", bob, roomID, 5, 1)
		if got := bob.notificationBodies(t, ""); fmt.Sprint(got) != "[m5 m2]" {
			t.Fatalf("bob's notifications: %v", got)
		}
		// Carol reads the thread: its part of the summary goes, the main
		// timeline's stays.
		hearthtest.Expect(t, carol.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(m4), map[string]any{"thread_id": m1}), http.StatusOK, "")
		expectUnread(t, "carol", carol, roomID, 4, 0)
		// A second rotation adds to what is still unread.
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m6"})
		rotate()
		expectUnread(t, "carol", carol, roomID, 5, 0)
		expectUnread(t, "bob", bob, roomID, 6, 1)
		// Bob reads everything: nothing is left, the highlight included.
		last := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "m7"})
		expectUnread(t, "bob", bob, roomID, 7, 1)
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}), http.StatusOK, "")
		expectUnread(t, "bob", bob, roomID, 0, 0)
	})
}

// TestIncrementalCountsFollowEveryChange: a sync's counts are kept by
// push between syncs and only the rows after the last sync are read
// (push.UnreadCountsAt); they must still follow every other change:
// receipts, rotation, purged events, leaving and a change of push rules.
func TestIncrementalCountsFollowEveryChange(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		tok := bob.sync(t, "", "").JSON["next_batch"].(string)
		send := func(body string) string {
			return alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": body})
		}
		// next sends a message and gives bob's counts in the incremental
		// sync that carries it.
		next := func(body string, notif, highlight float64) {
			t.Helper()
			send(body)
			r := bob.sync(t, tok, "timeout=5000")
			c, _ := unread(t, r, roomID)
			expectCounts(t, c, notif, highlight)
			tok = r.JSON["next_batch"].(string)
		}
		var ids []string
		for i := range 3 {
			ids = append(ids, send(fmt.Sprintf("m%d", i)))
		}
		next("m3", 4, 0)
		next("m4", 5, 0)
		// A receipt on m1: m2 to m5 are unread.
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(ids[1]), map[string]any{}), http.StatusOK, "")
		next("m5", 4, 0)
		// Rotation moves the rows into a summary: the same count.
		if err := hs.Push.Rotate(context.Background(), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		next("m6", 5, 0)
		// Purging unread events takes their rows away, counted or not.
		m7 := send("m7")
		next("m8", 7, 0)
		m9 := send("m9")
		if err := hs.DB.PurgeEvents(context.Background(), []string{m7, m9}); err != nil {
			t.Fatal(err)
		}
		hs.Rooms.ForgetEvents(m7, m9)
		next("m9b", 7, 0)
		// Rules of his own (a keyword) start a new range in another group.
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/pushrules/global/content/kw", map[string]any{
			"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}}}), http.StatusOK, "")
		next("cake", 8, 1)
		next("m10", 9, 1)
		// After leaving, nothing more counts; his counts of the room stay.
		hearthtest.Expect(t, bob.member(t, roomID, "leave", nil), http.StatusOK, "")
		send("m11")
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		next("m12", 10, 1)
	})
}

// After a restart the members' rules are read in batches (the rule cache
// is cold): a keyword rule of one member among others without rules still
// applies, on both engines.
func TestKeywordRuleAfterRestart(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		for _, u := range []user{bob, carol} {
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
		}
		hearthtest.Expect(t, carol.do(t, "PUT", "/_matrix/client/v3/pushrules/global/content/lunch", map[string]any{
			"pattern": "lunch", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}},
		}), http.StatusOK, "")
		hs.Restart(t)
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "Lunch at noon?"})
		expectUnread(t, "carol", carol, roomID, 1, 1)
		expectUnread(t, "bob", bob, roomID, 1, 0)
	})
}
