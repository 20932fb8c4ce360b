package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

const ssPath = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"

// ss makes an unstable-dialect sliding sync request and expects 200.
func (u user) ss(t *testing.T, pos string, timeoutMS int, body map[string]any) hearthtest.Response {
	t.Helper()
	r := u.ssRaw(t, pos, timeoutMS, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r
}

func (u user) ssRaw(t *testing.T, pos string, timeoutMS int, body map[string]any) hearthtest.Response {
	t.Helper()
	q := url.Values{}
	if pos != "" {
		q.Set("pos", pos)
	}
	q.Set("timeout", fmt.Sprint(timeoutMS))
	return u.do(t, "POST", ssPath+"?"+q.Encode(), body)
}

func ssRooms(r hearthtest.Response) map[string]any {
	m, _ := r.JSON["rooms"].(map[string]any)
	return m
}

func ssRoom(r hearthtest.Response, roomID string) map[string]any {
	m, _ := ssRooms(r)[roomID].(map[string]any)
	return m
}

func ssRoomIDs(r hearthtest.Response) []string {
	var out []string
	for id := range ssRooms(r) {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

func ssBodies(room map[string]any) []string {
	evs, _ := room["timeline"].([]any)
	var out []string
	for _, e := range evs {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			out = append(out, ev["content"].(map[string]any)["body"].(string))
		}
	}
	return out
}

func ssCount(r hearthtest.Response, list string) int {
	n, _ := path(r.JSON, "lists", list, "count").(float64)
	return int(n)
}

func roomListBody(ranges [][]int, timelineLimit int, requiredState [][]string) map[string]any {
	return map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{"all": map[string]any{
			"ranges": ranges, "timeline_limit": timelineLimit, "required_state": requiredState,
		}},
	}
}

func sameIDs(got []string, want ...string) bool {
	sort.Strings(want)
	return slices.Equal(got, want)
}

// Five rooms in a [0,1] window: a message bumps a room into it; invites,
// joins and leaves move rooms in and out; two connections of one device
// are independent.
func TestSlidingSyncRoomList(t *testing.T) {
	forEachDialect(t, func(t *testing.T, b hearthtest.Backend, v4 bool) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := ssUser{newUser(t, hs, "alice"), v4}, ssUser{newUser(t, hs, "bob"), v4}
		var ids []string
		for i := range 5 {
			ids = append(ids, alice.createRoom(t, map[string]any{"name": fmt.Sprintf("room %d", i)}))
		}
		body := roomListBody([][]int{{0, 1}}, 1, [][]string{{"m.room.name", ""}})
		r := alice.ss(t, "", 0, body)
		if ssCount(r, "all") != 5 || !sameIDs(ssRoomIDs(r), ids[3], ids[4]) {
			t.Fatalf("initial window: %s", r.Body)
		}
		top := ssRoom(r, ids[4])
		if top["initial"] != true || top["name"] != "room 4" || top["membership"] != "join" || top["bump_stamp"] == nil ||
			top["joined_count"] != float64(1) {
			t.Fatalf("initial room: %v", top)
		}
		if st, _ := top["required_state"].([]any); len(st) != 1 || st[0].(map[string]any)["type"] != "m.room.name" {
			t.Fatalf("required_state: %v", top["required_state"])
		}
		pos := r.JSON["pos"].(string)

		// The second connection of the device has its own state.
		enc := alice.ss(t, "", 0, map[string]any{"conn_id": "encryption", "extensions": map[string]any{"e2ee": map[string]any{"enabled": true}}})
		if len(ssRooms(enc)) != 0 || path(enc.JSON, "extensions", "e2ee", "device_one_time_keys_count") == nil {
			t.Fatalf("encryption connection: %s", enc.Body)
		}
		encPos := enc.JSON["pos"].(string)
		// A pos names one connection: not usable on another.
		bad := alice.ssRaw(t, encPos, 0, body)
		hearthtest.Expect(t, bad, http.StatusBadRequest, "M_UNKNOWN_POS")

		// Nothing new: an incremental request is empty.
		r = alice.ss(t, pos, 0, body)
		if len(ssRooms(r)) != 0 {
			t.Fatalf("empty incremental: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// A message bumps room 0 to the top: it enters the window with
		// initial set and its message live.
		alice.send(t, ids[0], "hello")
		r = alice.ss(t, pos, 5000, body)
		r0 := ssRoom(r, ids[0])
		if !sameIDs(ssRoomIDs(r), ids[0]) || r0["initial"] != true || r0["num_live"] != float64(1) ||
			!slices.Equal(ssBodies(r0), []string{"hello"}) {
			t.Fatalf("bumped room: %s", r.Body)
		}
		if r0["bump_stamp"].(float64) <= top["bump_stamp"].(float64) {
			t.Fatalf("bump_stamp did not grow: %v vs %v", r0["bump_stamp"], top["bump_stamp"])
		}
		pos = r.JSON["pos"].(string)

		// A message in a room already sent: only the new event, not initial.
		alice.send(t, ids[4], "again")
		r = alice.ss(t, pos, 5000, body)
		r4 := ssRoom(r, ids[4])
		if !sameIDs(ssRoomIDs(r), ids[4]) || r4["initial"] != nil || r4["num_live"] != float64(1) ||
			!slices.Equal(ssBodies(r4), []string{"again"}) || r4["name"] != nil {
			t.Fatalf("incremental room: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// A long-poll wakes when a message arrives.
		done := make(chan hearthtest.Response, 1)
		go func() { done <- alice.ss(t, pos, 10000, body) }()
		time.Sleep(200 * time.Millisecond)
		alice.send(t, ids[0], "woken")
		select {
		case r = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("long-poll did not wake")
		}
		if !slices.Equal(ssBodies(ssRoom(r, ids[0])), []string{"woken"}) {
			t.Fatalf("long-poll result: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// An invite comes in at the top with its stripped state.
		invited := bob.createRoom(t, map[string]any{"name": "bob's room"})
		hearthtest.Expect(t, bob.member(t, invited, "invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		inv := ssRoom(r, invited)
		if inv == nil || inv["membership"] != "invite" || inv["invite_state"] == nil || ssCount(r, "all") != 6 {
			t.Fatalf("invite: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)
		// Joining sends the room again, now in full.
		hearthtest.Expect(t, alice.member(t, invited, "join", nil), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		joined := ssRoom(r, invited)
		if joined == nil || joined["membership"] != "join" || joined["initial"] != true || joined["name"] != "bob's room" {
			t.Fatalf("join: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)
		// Leaving sends the leave once and the room drops out of the list.
		hearthtest.Expect(t, alice.member(t, invited, "leave", nil), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		left := ssRoom(r, invited)
		if left == nil || left["membership"] != "leave" || ssCount(r, "all") != 5 {
			t.Fatalf("leave: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)
		bob.send(t, invited, "after you left")
		alice.send(t, ids[1], "bump 1")
		r = alice.ss(t, pos, 5000, body)
		if ssRoom(r, invited) != nil || ssRoom(r, ids[1]) == nil {
			t.Fatalf("after leave: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// A rejected invite goes the same way, with the leave.
		rejected := bob.createRoom(t, nil)
		hearthtest.Expect(t, bob.member(t, rejected, "invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		if ssRoom(r, rejected)["membership"] != "invite" {
			t.Fatalf("second invite: %s", r.Body)
		}
		hearthtest.Expect(t, alice.member(t, rejected, "leave", nil), http.StatusOK, "")
		r = alice.ss(t, r.JSON["pos"].(string), 5000, body)
		if room := ssRoom(r, rejected); room["membership"] != "leave" || len(room["timeline"].([]any)) != 1 || ssCount(r, "all") != 5 {
			t.Fatalf("rejected invite: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		// Kicked: the kick comes in the timeline, then the room is gone.
		kicked := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, alice.member(t, kicked, "join", nil), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		if ssRoom(r, kicked)["membership"] != "join" {
			t.Fatalf("joined room to be kicked from: %s", r.Body)
		}
		hearthtest.Expect(t, bob.member(t, kicked, "kick", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		r = alice.ss(t, r.JSON["pos"].(string), 5000, body)
		room := ssRoom(r, kicked)
		tl, _ := room["timeline"].([]any)
		if room["membership"] != "leave" || len(tl) == 0 || tl[len(tl)-1].(map[string]any)["sender"] != bob.id {
			t.Fatalf("kick: %s", r.Body)
		}
		// Retrying from one pos (cancelled requests) works every time.
		pos = r.JSON["pos"].(string)
		for range 8 {
			alice.ss(t, pos, 0, body)
		}
		r = alice.ss(t, pos, 0, body)
		if ssRoom(r, kicked) != nil || ssCount(r, "all") != 5 {
			t.Fatalf("after kick: %s", r.Body)
		}
	})
}

// A room subscription has its own timeline_limit and required_state; its
// prev_batch pages back with /messages; $LAZY gives the senders' members.
func TestSlidingSyncRoomSubscription(t *testing.T) {
	forEachDialect(t, func(t *testing.T, b hearthtest.Backend, v4 bool) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := ssUser{newUser(t, hs, "alice"), v4}, ssUser{newUser(t, hs, "bob"), v4}
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "subscribed"})
		other := alice.createRoom(t, nil)
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		for i := range 10 {
			alice.send(t, roomID, fmt.Sprintf("m%d", i))
		}
		bob.send(t, roomID, "from bob")
		alice.send(t, other, "other room is newer")
		body := map[string]any{
			"conn_id": "room-list",
			"lists": map[string]any{"all": map[string]any{
				"ranges": [][]int{{0, 1}}, "timeline_limit": 1,
				"required_state": [][]string{{"m.room.member", "$LAZY"}},
			}},
			"room_subscriptions": map[string]any{roomID: map[string]any{
				"timeline_limit": 3, "required_state": [][]string{{"*", "*"}},
			}},
		}
		r := alice.ss(t, "", 0, body)
		sub := ssRoom(r, roomID)
		if got := ssBodies(sub); !slices.Equal(got, []string{"m8", "m9", "from bob"}) || sub["limited"] != true {
			t.Fatalf("subscription timeline %v: %s", got, r.Body)
		}
		types := map[string]bool{}
		for _, e := range sub["required_state"].([]any) {
			types[e.(map[string]any)["type"].(string)] = true
		}
		if !types["m.room.create"] || !types["m.room.power_levels"] || !types["m.room.name"] || !types["m.room.member"] {
			t.Fatalf("subscription required_state: %v", types)
		}
		// The list room (the other room) has only lazy members: alice's.
		lst := ssRoom(r, other)
		st, _ := lst["required_state"].([]any)
		if len(st) != 1 || st[0].(map[string]any)["state_key"] != alice.id || lst["lists"] == nil {
			t.Fatalf("lazy members: %v", lst)
		}
		// prev_batch pages back from before the timeline.
		m := alice.messages(t, roomID, "dir=b&limit=3&from="+url.QueryEscape(sub["prev_batch"].(string)))
		hearthtest.Expect(t, m, http.StatusOK, "")
		var back []string
		for _, e := range m.JSON["chunk"].([]any) {
			ev := e.(map[string]any)
			if ev["type"] == "m.room.message" {
				back = append(back, ev["content"].(map[string]any)["body"].(string))
			}
		}
		if !slices.Equal(back, []string{"m7", "m6", "m5"}) {
			t.Fatalf("paging back from prev_batch: %v", back)
		}
		// A pos is a pagination token too (MSC4186): from the latest event.
		m = alice.messages(t, roomID, "dir=b&limit=2&from="+url.QueryEscape(r.JSON["pos"].(string)))
		hearthtest.Expect(t, m, http.StatusOK, "")
		if chunk := m.JSON["chunk"].([]any); len(chunk) != 2 || chunk[0].(map[string]any)["content"].(map[string]any)["body"] != "from bob" {
			t.Fatalf("paging back from pos: %s", m.Body)
		}
		// Unsubscribing and subscribing again with a bigger limit resends.
		pos := r.JSON["pos"].(string)
		body["room_subscriptions"] = map[string]any{roomID: map[string]any{"timeline_limit": 5, "required_state": [][]string{{"*", "*"}}}}
		r = alice.ss(t, pos, 0, body)
		if got := ssBodies(ssRoom(r, roomID)); len(got) != 5 || ssRoom(r, roomID)["initial"] != true {
			t.Fatalf("expanded timeline: %v", got)
		}
		// Dropping the subscription narrows the config: no resend, the
		// next message comes alone.
		pos = r.JSON["pos"].(string)
		delete(body, "room_subscriptions")
		r = alice.ss(t, pos, 0, body)
		if len(ssRooms(r)) != 0 {
			t.Fatalf("narrowed config resent rooms: %s", r.Body)
		}
		bob.send(t, roomID, "later")
		r = alice.ss(t, r.JSON["pos"].(string), 5000, body)
		if room := ssRoom(r, roomID); room["initial"] != nil || !slices.Equal(ssBodies(room), []string{"later"}) {
			t.Fatalf("after narrowing: %s", r.Body)
		}
		// A state change: required_state carries what matches, name the
		// new name.
		body["room_subscriptions"] = map[string]any{roomID: map[string]any{"timeline_limit": 1, "required_state": [][]string{{"m.room.name", ""}}}}
		r = alice.ss(t, r.JSON["pos"].(string), 0, body)
		alice.putState(t, roomID, "m.room.name", "", map[string]any{"name": "renamed"})
		alice.putState(t, roomID, "m.room.topic", "", map[string]any{"topic": "not asked for"})
		r = alice.ss(t, r.JSON["pos"].(string), 5000, body)
		room := ssRoom(r, roomID)
		// (the list's $LAZY adds the timeline sender's member event)
		changedTypes := map[string]bool{}
		for _, e := range room["required_state"].([]any) {
			changedTypes[e.(map[string]any)["type"].(string)] = true
		}
		if room["name"] != "renamed" || room["initial"] != nil || !changedTypes["m.room.name"] || changedTypes["m.room.topic"] {
			t.Fatalf("state change: %s", r.Body)
		}
	})
}

// to_device messages are given until a later request's since acknowledges
// them; the e2ee extension reports a new device of the user.
func TestSlidingSyncToDeviceAndE2EE(t *testing.T) {
	forEachDialect(t, func(t *testing.T, b hearthtest.Backend, v4 bool) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := ssUser{newUser(t, hs, "alice"), v4}, ssUser{newUser(t, hs, "bob"), v4}
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		ext := func(since string) map[string]any {
			td := map[string]any{"enabled": true}
			if since != "" {
				td["since"] = since
			}
			return map[string]any{"conn_id": "encryption", "extensions": map[string]any{
				"to_device": td, "e2ee": map[string]any{"enabled": true}, "unknown_ext": map[string]any{"enabled": true},
			}}
		}
		r := bob.ss(t, "", 0, ext(""))
		pos := r.JSON["pos"].(string)
		since := path(r.JSON, "extensions", "to_device", "next_batch").(string)
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", map[string]any{
			"messages": map[string]any{bob.id: map[string]any{"*": map[string]any{"n": 1}}},
		}), http.StatusOK, "")
		r = bob.ss(t, pos, 5000, ext(since))
		evs, _ := path(r.JSON, "extensions", "to_device", "events").([]any)
		if len(evs) != 1 || evs[0].(map[string]any)["sender"] != alice.id {
			t.Fatalf("to_device: %s", r.Body)
		}
		// Repeating the request (response lost) gives it again.
		again := bob.ss(t, pos, 0, ext(since))
		if evs, _ := path(again.JSON, "extensions", "to_device", "events").([]any); len(evs) != 1 {
			t.Fatalf("to_device lost before acknowledgement: %s", again.Body)
		}
		// since acknowledges: not delivered again.
		pos = r.JSON["pos"].(string)
		since = path(r.JSON, "extensions", "to_device", "next_batch").(string)
		r = bob.ss(t, pos, 0, ext(since))
		if evs, _ := path(r.JSON, "extensions", "to_device", "events").([]any); len(evs) != 0 {
			t.Fatalf("to_device delivered twice: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)
		since = path(r.JSON, "extensions", "to_device", "next_batch").(string)
		// A new device of bob is in device_lists.changed.
		hearthtest.Expect(t, passwordLogin(t, hs, "bob", "password", nil), http.StatusOK, "")
		r = bob.ss(t, pos, 5000, ext(since))
		changed, _ := path(r.JSON, "extensions", "e2ee", "device_lists", "changed").([]any)
		if !slices.Contains(changed, any(bob.id)) {
			t.Fatalf("device_lists.changed lacks bob: %s", r.Body)
		}
	})
}

// pos survives a restart; unknown or foreign pos and bad input are refused.
func TestSlidingSyncPosAndErrors(t *testing.T) {
	forEachDialect(t, func(t *testing.T, b hearthtest.Backend, v4 bool) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := ssUser{newUser(t, hs, "alice"), v4}, ssUser{newUser(t, hs, "bob"), v4}
		roomID := alice.createRoom(t, nil)
		body := roomListBody([][]int{{0, 9}}, 5, [][]string{{"m.room.create", ""}})
		body["extensions"] = map[string]any{"account_data": map[string]any{"enabled": true}}
		r := alice.ss(t, "", 0, body)
		if ssRoom(r, roomID) == nil || path(r.JSON, "extensions", "account_data", "global") == nil {
			t.Fatalf("initial: %s", r.Body)
		}
		pos := r.JSON["pos"].(string)

		hs.Restart(t)
		alice.send(t, roomID, "after restart")
		r = alice.ss(t, pos, 5000, body)
		if got := ssBodies(ssRoom(r, roomID)); !slices.Equal(got, []string{"after restart"}) {
			t.Fatalf("after restart: %s", r.Body)
		}
		pos = r.JSON["pos"].(string)

		hearthtest.Expect(t, alice.ssRaw(t, "999999", 0, body), http.StatusBadRequest, "M_UNKNOWN_POS")
		hearthtest.Expect(t, alice.ssRaw(t, "garbage", 0, body), http.StatusBadRequest, "M_UNKNOWN_POS")
		// Another user's pos is unknown to them.
		hearthtest.Expect(t, bob.ssRaw(t, pos, 0, body), http.StatusBadRequest, "M_UNKNOWN_POS")

		for name, ranges := range map[string]any{
			"negative": [][]int{{-1, 3}}, "reversed": [][]int{{5, 2}}, "short": [][]int{{1}},
			"too many": [][]int{{0, 1}, {2, 3}, {4, 5}, {6, 7}, {8, 9}, {10, 11}, {12, 13}, {14, 15}, {16, 17}, {18, 19}, {20, 21}},
		} {
			if v4 && name == "too many" {
				continue // v4 has one range per list
			}
			bad := map[string]any{"lists": map[string]any{"l": map[string]any{"ranges": ranges, "timeline_limit": 1}}}
			if r := alice.ssRaw(t, "", 0, bad); r.Status != http.StatusBadRequest || r.ErrCode() != "M_INVALID_PARAM" {
				t.Errorf("%s ranges: %d %s", name, r.Status, r.Body)
			}
		}
		var huge [][]string
		for i := range 500 {
			huge = append(huge, []string{"m.custom", fmt.Sprint(i)})
		}
		r = alice.ssRaw(t, "", 0, roomListBody([][]int{{0, 1}}, 1, huge))
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_INVALID_PARAM")

		v := alice.do(t, "GET", "/_matrix/client/versions", nil)
		if path(v.JSON, "unstable_features", "org.matrix.simplified_msc3575") != true {
			t.Fatalf("versions: %s", v.Body)
		}
	})
}

// The v4 dialect: pos and timeout in the body, range, include/exclude,
// stripped_state for invites.
func TestSlidingSyncV4(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"name": "v4 room"})
		body := map[string]any{
			"conn_id": "main",
			"lists": map[string]any{"all": map[string]any{
				"range": []int{0, 9}, "timeline_limit": 2,
				"required_state": map[string]any{"include": []any{map[string]any{}}, "exclude": []any{map[string]any{"type": "m.room.create"}}},
			}},
		}
		v4 := func(u user, body map[string]any) hearthtest.Response {
			t.Helper()
			r := u.do(t, "POST", "/_matrix/client/v4/sync", body)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r
		}
		r := v4(alice, body)
		room := ssRoom(r, roomID)
		types := map[string]bool{}
		for _, e := range room["required_state"].([]any) {
			types[e.(map[string]any)["type"].(string)] = true
		}
		if types["m.room.create"] || !types["m.room.name"] || room["notification_count"] != nil {
			t.Fatalf("v4 room: %s", r.Body)
		}
		body["pos"], body["timeout"] = r.JSON["pos"], 5000
		hearthtest.Expect(t, alice.member(t, roomID, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		r = v4(bob, map[string]any{"lists": map[string]any{"all": map[string]any{"range": []int{0, 9}, "timeline_limit": 1,
			"filters": map[string]any{"is_invited": true}}}})
		inv := ssRoom(r, roomID)
		if inv == nil || inv["stripped_state"] == nil || inv["invite_state"] != nil || ssCount(r, "all") != 1 {
			t.Fatalf("v4 invite: %s", r.Body)
		}
		alice.send(t, roomID, "v4 message")
		r = v4(alice, body)
		if got := ssBodies(ssRoom(r, roomID)); !slices.Contains(got, "v4 message") {
			t.Fatalf("v4 incremental: %s", r.Body)
		}
		// A removed name is null.
		body["pos"] = r.JSON["pos"]
		alice.putState(t, roomID, "m.room.name", "", map[string]any{})
		r = v4(alice, body)
		if name, ok := ssRoom(r, roomID)["name"]; !ok || name != nil {
			t.Fatalf("v4 removed name: %s", r.Body)
		}
	})
}

// List filters: is_dm (m.direct), is_encrypted, is_invite, room_types and
// not_room_types (null for rooms without a type).
func TestSlidingSyncFilters(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		plain := alice.createRoom(t, nil)
		dm := alice.createRoom(t, nil)
		encrypted := alice.createRoom(t, map[string]any{"initial_state": []any{map[string]any{
			"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
		space := alice.createRoom(t, map[string]any{"creation_content": map[string]any{"type": "m.space"}})
		invite := bob.createRoom(t, nil)
		hearthtest.Expect(t, bob.member(t, invite, "invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/account_data/m.direct",
			map[string]any{bob.id: []string{dm}}), http.StatusOK, "")
		alice.putState(t, space, "m.space.child", plain, map[string]any{"via": []string{"hearth.test"}})
		alice.putState(t, space, "m.space.child", dm, map[string]any{}) // no via: not a child
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/rooms/"+url.PathEscape(dm)+"/tags/m.favourite",
			map[string]any{"order": 0.5}), http.StatusOK, "")
		list := func(filters map[string]any) map[string]any {
			return map[string]any{"ranges": [][]int{{0, 20}}, "timeline_limit": 0, "filters": filters}
		}
		r := alice.ss(t, "", 0, map[string]any{"lists": map[string]any{
			"dms":       list(map[string]any{"is_dm": true}),
			"encrypted": list(map[string]any{"is_encrypted": true}),
			"invites":   list(map[string]any{"is_invite": true}),
			"spaces":    list(map[string]any{"room_types": []any{"m.space"}}),
			"untyped":   list(map[string]any{"room_types": []any{nil}, "is_invite": false}),
			"nospaces":  list(map[string]any{"not_room_types": []any{"m.space"}}),
			"all":       list(nil),
			"inspace":   list(map[string]any{"spaces": []string{space, "!unknown:hearth.test"}}),
			"fav":       list(map[string]any{"tags": []string{"m.favourite"}}),
			"notfav":    list(map[string]any{"not_tags": []string{"m.favourite"}, "is_invite": false}),
		}})
		want := map[string][]string{
			"dms": {dm}, "encrypted": {encrypted}, "invites": {invite}, "spaces": {space},
			"untyped": {plain, dm, encrypted}, "nospaces": {plain, dm, encrypted, invite},
			"all":     {plain, dm, encrypted, space, invite},
			"inspace": {plain}, "fav": {dm}, "notfav": {plain, encrypted, space},
		}
		for name, ids := range want {
			var got []string
			for id, room := range ssRooms(r) {
				if slices.Contains(room.(map[string]any)["lists"].([]any), any(name)) {
					got = append(got, id)
				}
			}
			sort.Strings(got)
			if !sameIDs(got, ids...) || ssCount(r, name) != len(ids) {
				t.Errorf("list %s: %v (count %d), want %v", name, got, ssCount(r, name), ids)
			}
		}
		if ssRoom(r, dm)["is_dm"] != true || ssRoom(r, plain)["is_dm"] != nil {
			t.Errorf("is_dm flags: %s", r.Body)
		}
	})
}

// Notification counts come with new messages and go when the user's own
// read receipt clears them, without a new event.
func TestSlidingSyncNotificationCounts(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		body := roomListBody([][]int{{0, 9}}, 1, nil)
		body["extensions"] = map[string]any{"receipts": map[string]any{"enabled": true}}
		r := alice.ss(t, "", 0, body)
		pos := r.JSON["pos"].(string)
		eventID := bob.send(t, roomID, "ping").JSON["event_id"].(string)
		r = alice.ss(t, pos, 5000, body)
		if n := ssRoom(r, roomID)["notification_count"]; n != float64(1) {
			t.Fatalf("notification_count %v: %s", n, r.Body)
		}
		pos = r.JSON["pos"].(string)
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(eventID),
			map[string]any{}), http.StatusOK, "")
		r = alice.ss(t, pos, 5000, body)
		room := ssRoom(r, roomID)
		if room["notification_count"] != float64(0) || room["timeline"] != nil {
			t.Fatalf("after reading: %s", r.Body)
		}
		if path(r.JSON, "extensions", "receipts", "rooms", roomID) == nil {
			t.Fatalf("receipts extension lacks the receipt: %s", r.Body)
		}
	})
}

// A pos from one process works on another sharing the PostgreSQL database,
// and a long-poll there wakes for a message sent through the first.
func TestSlidingSyncAcrossProcesses(t *testing.T) {
	if !slices.Contains(hearthtest.Backends(), hearthtest.Postgres) {
		t.Skip("needs HEARTH_TEST_POSTGRES")
	}
	p1 := hearthtest.NewServer(t, hearthtest.Postgres, nil)
	p2 := p1.AnotherProcess(t)
	alice, bob := newUser(t, p1, "alice"), newUser(t, p1, "bob")
	roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
	body := roomListBody([][]int{{0, 9}}, 5, nil)
	pos := alice.ss(t, "", 0, body).JSON["pos"].(string)

	aliceOn2 := user{p2, alice.id, alice.token}
	done := make(chan hearthtest.Response, 1)
	go func() { done <- aliceOn2.ss(t, pos, 20000, body) }()
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	bob.send(t, roomID, "through process 1")
	var r hearthtest.Response
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("long-poll on the other process did not wake")
	}
	if took := time.Since(start); took > 5*time.Second || !slices.Equal(ssBodies(ssRoom(r, roomID)), []string{"through process 1"}) {
		t.Fatalf("after %v: %s", took, r.Body)
	}
	// And back on the first process with the pos the second issued.
	bob.send(t, roomID, "again")
	r = alice.ss(t, r.JSON["pos"].(string), 5000, body)
	if !slices.Equal(ssBodies(ssRoom(r, roomID)), []string{"again"}) {
		t.Fatalf("back on process 1: %s", r.Body)
	}
}
