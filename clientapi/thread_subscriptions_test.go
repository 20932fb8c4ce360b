package clientapi_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

const threadSubsPrefix = "/_matrix/client/unstable/io.element.msc4306/rooms/"

func threadSubPath(roomID, threadID string) string {
	return threadSubsPrefix + url.PathEscape(roomID) + "/thread/" + url.PathEscape(threadID) + "/subscription"
}

func (u user) threadReply(t *testing.T, roomID, rootID, body string) string {
	t.Helper()
	return u.sendEvent(t, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": rootID}})
}

func msgEvent(body string) map[string]any {
	return map[string]any{"msgtype": "m.text", "body": body}
}

// MSC4306's endpoints: manual and automatic subscriptions, manual winning,
// the cause event checks, idempotent unsubscription, 404 for threads the
// user cannot see, and the ordering of automatic subscriptions against
// unsubscriptions.
func TestThreadSubscriptions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, nil)
		root := alice.sendEvent(t, roomID, "m.room.message", msgEvent("root"))
		other := alice.sendEvent(t, roomID, "m.room.message", msgEvent("other root"))
		reply1 := alice.threadReply(t, roomID, root, "reply 1")
		otherReply := alice.threadReply(t, roomID, other, "other reply")
		p := threadSubPath(roomID, root)

		hearthtest.Expect(t, alice.do(t, "GET", p, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{}), http.StatusOK, "")
		if r := alice.do(t, "GET", p, nil); r.Status != http.StatusOK || r.JSON["automatic"] != false {
			t.Fatalf("manual: %d %s", r.Status, r.Body)
		}
		// An automatic subscription does not downgrade a manual one.
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": reply1}), http.StatusOK, "")
		if r := alice.do(t, "GET", p, nil); r.JSON["automatic"] != false {
			t.Fatalf("after automatic: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "DELETE", p, nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", p, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "DELETE", p, nil), http.StatusOK, "") // idempotent

		// Cause events: the root itself and another thread's reply are not
		// in the thread; an unknown event is 404.
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": root}), http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": otherReply}), http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": "$nope:example.org"}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": 5}), http.StatusBadRequest, "M_BAD_JSON")

		// reply1 came before the unsubscription: refused; a later reply is
		// a new cause.
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": reply1}), http.StatusConflict, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
		hearthtest.Expect(t, alice.do(t, "GET", p, nil), http.StatusNotFound, "M_NOT_FOUND")
		reply2 := alice.threadReply(t, roomID, root, "reply 2")
		hearthtest.Expect(t, alice.do(t, "PUT", p, map[string]any{"automatic": reply2}), http.StatusOK, "")
		if r := alice.do(t, "GET", p, nil); r.JSON["automatic"] != true {
			t.Fatalf("automatic: %s", r.Body)
		}
		// Manual replaces automatic.
		hearthtest.Expect(t, alice.do(t, "PUT", p, nil), http.StatusOK, "")
		if r := alice.do(t, "GET", p, nil); r.JSON["automatic"] != false {
			t.Fatalf("manual over automatic: %s", r.Body)
		}

		// Threads that do not exist, or the user cannot see.
		missing := threadSubPath(roomID, "$notathread:example.org")
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			hearthtest.Expect(t, alice.do(t, m, missing, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
			hearthtest.Expect(t, bob.do(t, m, p, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		}
		hearthtest.Expect(t, bob.do(t, "GET", threadSubPath("!nowhere:example.org", root), nil), http.StatusNotFound, "M_NOT_FOUND")

		// Subscriptions are per user.
		if r := alice.do(t, "GET", p, nil); r.Status != http.StatusOK {
			t.Fatalf("alice lost her subscription: %s", r.Body)
		}
	})
}

func threadSubsExt(r hearthtest.Response) map[string]any {
	m, _ := path(r.JSON, "extensions", "io.element.msc4308.thread_subscriptions").(map[string]any)
	return m
}

// MSC4308's extension, both dialects: the current subscriptions on a new
// connection, then changes (subscribed and unsubscribed) as they happen,
// waking a waiting request; the limit and prev_batch, and the companion
// endpoint paginating backwards from it.
func TestThreadSubscriptionsSlidingSync(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, nil)
		var roots []string
		for _, body := range []string{"a", "b", "c"} {
			roots = append(roots, alice.sendEvent(t, roomID, "m.room.message", msgEvent(body)))
		}
		ext := func(limit int) map[string]any {
			return map[string]any{"conn_id": "threads", "extensions": map[string]any{
				"io.element.msc4308.thread_subscriptions": map[string]any{"enabled": true, "limit": limit}}}
		}
		r := alice.ss(t, "", 0, ext(2))
		if ts := threadSubsExt(r); ts["subscribed"] != nil || ts["unsubscribed"] != nil {
			t.Fatalf("no subscriptions yet: %s", r.Body)
		}
		pos := r.JSON["pos"].(string)

		// A change wakes a waiting request.
		done := make(chan hearthtest.Response, 1)
		go func() { done <- alice.ss(t, pos, 10000, ext(2)) }()
		hearthtest.Expect(t, alice.do(t, "PUT", threadSubPath(roomID, roots[0]), map[string]any{}), http.StatusOK, "")
		r = <-done
		sub, _ := path(threadSubsExt(r), "subscribed", roomID, roots[0]).(map[string]any)
		if sub == nil || sub["automatic"] != false || sub["bump_stamp"] == nil {
			t.Fatalf("subscription: %s", r.Body)
		}
		stamp := sub["bump_stamp"].(float64)
		pos = r.JSON["pos"].(string)

		// Nothing new: a short poll ends empty.
		r = alice.ss(t, pos, 0, ext(2))
		if threadSubsExt(r)["subscribed"] != nil {
			t.Fatalf("repeated: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// Three changes with a limit of two: the latest two, and a
		// prev_batch for the companion endpoint, which gives the third.
		for _, root := range roots[1:] {
			hearthtest.Expect(t, alice.do(t, "PUT", threadSubPath(roomID, root), map[string]any{}), http.StatusOK, "")
		}
		hearthtest.Expect(t, alice.do(t, "DELETE", threadSubPath(roomID, roots[0]), nil), http.StatusOK, "")
		r = alice.ss(t, pos, 0, ext(2))
		ts := threadSubsExt(r)
		un, _ := path(ts, "unsubscribed", roomID, roots[0]).(map[string]any)
		if un == nil || un["bump_stamp"].(float64) <= stamp || path(ts, "subscribed", roomID, roots[2]) == nil ||
			path(ts, "subscribed", roomID, roots[1]) != nil || ts["prev_batch"] == nil {
			t.Fatalf("limited changes: %s", r.Body)
		}
		q := url.Values{"dir": {"b"}, "from": {ts["prev_batch"].(string)}, "to": {pos}, "limit": {"10"}}
		page := alice.do(t, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?"+q.Encode(), nil)
		hearthtest.Expect(t, page, http.StatusOK, "")
		if path(page.JSON, "subscribed", roomID, roots[1]) == nil || len(page.JSON["subscribed"].(map[string]any)[roomID].(map[string]any)) != 1 ||
			page.JSON["end"] != nil {
			t.Fatalf("companion page: %s", page.Body)
		}
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=f", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&from=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		// Without a pos the companion endpoint lists current subscriptions,
		// newest first, paginating with end.
		first := alice.do(t, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=1", nil)
		if path(first.JSON, "subscribed", roomID, roots[2]) == nil || first.JSON["end"] == nil {
			t.Fatalf("first page: %s", first.Body)
		}
		second := alice.do(t, "GET", "/_matrix/client/unstable/io.element.msc4308/thread_subscriptions?dir=b&limit=1&from="+first.JSON["end"].(string), nil)
		if path(second.JSON, "subscribed", roomID, roots[1]) == nil || second.JSON["end"] != nil {
			t.Fatalf("second page: %s", second.Body)
		}

		// A new connection, v4 dialect: the current subscriptions only.
		v4 := alice.do(t, "POST", "/_matrix/client/v4/sync", ext(10))
		hearthtest.Expect(t, v4, http.StatusOK, "")
		ts = threadSubsExt(v4)
		if len(path(ts, "subscribed", roomID).(map[string]any)) != 2 || ts["unsubscribed"] != nil {
			t.Fatalf("v4 initial: %s", v4.Body)
		}
		hearthtest.Expect(t, alice.ssRaw(t, "", 0, map[string]any{"extensions": map[string]any{
			"io.element.msc4308.thread_subscriptions": map[string]any{"enabled": true, "limit": 0}}}), http.StatusBadRequest, "M_INVALID_PARAM")

		v := alice.do(t, "GET", "/_matrix/client/versions", nil)
		if path(v.JSON, "unstable_features", "org.matrix.msc4306") != true {
			t.Fatalf("versions: %s", v.Body)
		}
	})
}

// The push condition of MSC4306 in a user's own rule: Bob silences threads
// he is not subscribed to; a reply in such a thread counts for nothing, one
// in a thread he subscribed to notifies as before.
func TestThreadSubscriptionPushCondition(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/pushrules/global/override/quiet-threads", map[string]any{
			"actions":    []any{},
			"conditions": []any{map[string]any{"kind": "io.element.msc4306.thread_subscription", "subscribed": false}},
		}), http.StatusOK, "")
		if r := bob.do(t, "GET", "/_matrix/client/v3/pushrules/global/override/quiet-threads", nil); path(r.JSON, "conditions") == nil ||
			r.JSON["conditions"].([]any)[0].(map[string]any)["subscribed"] != false {
			t.Fatalf("stored rule: %s", r.Body)
		}
		quiet := alice.sendEvent(t, roomID, "m.room.message", msgEvent("quiet root"))
		loud := alice.sendEvent(t, roomID, "m.room.message", msgEvent("loud root"))
		hearthtest.Expect(t, bob.do(t, "PUT", threadSubPath(roomID, loud), map[string]any{}), http.StatusOK, "")
		alice.threadReply(t, roomID, quiet, "unsubscribed reply")
		alice.threadReply(t, roomID, loud, "subscribed reply")
		flush(t, hs)
		var got []string
		for _, n := range bob.do(t, "GET", "/_matrix/client/v3/notifications", nil).JSON["notifications"].([]any) {
			got = append(got, path(n, "event", "content", "body").(string))
		}
		// The two roots (a two-member room notifies every message) and the
		// reply in the subscribed thread.
		if len(got) != 3 || got[0] != "subscribed reply" || slices.Contains(got, "unsubscribed reply") {
			t.Fatalf("notifications: %v", got)
		}
	})
}

// MSC4306's default rules, with thread_subscription_push_rules on: a reply
// in a thread Bob did not subscribe to does not notify, a mention in it
// still does, and a subscribed thread notifies. Clients cannot add
// postcontent rules; without the option the kind is absent.
func TestThreadSubscriptionPushRules(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.ThreadSubscriptionPushRules = true })
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")

		rules := bob.do(t, "GET", "/_matrix/client/v3/pushrules/", nil)
		pc, _ := path(rules.JSON, "global", "postcontent").([]any)
		if len(pc) != 2 || path(pc[0], "rule_id") != ".io.element.msc4306.rule.unsubscribed_thread" ||
			path(pc[1], "rule_id") != ".io.element.msc4306.rule.subscribed_thread" || path(pc[0], "default") != true {
			t.Fatalf("postcontent rules: %v", path(rules.JSON, "global", "postcontent"))
		}
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/pushrules/global/postcontent/mine", map[string]any{
			"actions": []any{"notify"}, "conditions": []any{}}), http.StatusBadRequest, "M_INVALID_PARAM")

		quiet := alice.sendEvent(t, roomID, "m.room.message", msgEvent("quiet root"))
		loud := alice.sendEvent(t, roomID, "m.room.message", msgEvent("loud root"))
		hearthtest.Expect(t, bob.do(t, "PUT", threadSubPath(roomID, loud), map[string]any{}), http.StatusOK, "")
		alice.threadReply(t, roomID, quiet, "unsubscribed reply")
		alice.sendEvent(t, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob, look",
			"m.mentions":   map[string]any{"user_ids": []any{bob.id}},
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": quiet}})
		alice.threadReply(t, roomID, loud, "subscribed reply")
		flush(t, hs)
		var got []string
		for _, n := range bob.do(t, "GET", "/_matrix/client/v3/notifications", nil).JSON["notifications"].([]any) {
			got = append(got, path(n, "event", "content", "body").(string))
		}
		if !slices.Equal(got, []string{"subscribed reply", "bob, look", "loud root", "quiet root"}) {
			t.Fatalf("notifications: %v", got)
		}

		// Off (the default): no postcontent kind.
		off := hearthtest.NewServer(t, b, nil)
		carol := newUser(t, off, "carol")
		if r := carol.do(t, "GET", "/_matrix/client/v3/pushrules/", nil); path(r.JSON, "global", "postcontent") != nil {
			t.Fatalf("postcontent without the option: %s", r.Body)
		}
		hearthtest.Expect(t, carol.do(t, "GET", "/_matrix/client/v3/pushrules/global/postcontent/.io.element.msc4306.rule.subscribed_thread", nil),
			http.StatusNotFound, "M_NOT_FOUND")
	})
}
