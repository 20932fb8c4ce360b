package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// Sliding sync benchmarks (issue 14), side by side with /sync: the first
// 20-room window of a user in many rooms, and the response to one new
// message. Over real HTTP on SQLite, like the benchmarks in bench_test.go.

// benchUserRooms registers a user joined to n rooms with a name and two
// messages each, and returns the server, the user's token and the rooms in
// creation order.
func benchUserRooms(b *testing.B, n int) (*hearthtest.Server, string, string, []string) {
	b.Helper()
	hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
	user, token := hs.RegisterUser(b, "reader")
	ctx := context.Background()
	ids := make([]string, 0, n)
	for i := range n {
		r := hs.Do(b, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "private_chat", "name": fmt.Sprintf("room %d", i)})
		hearthtest.Expect(b, r, 200, "")
		id := r.JSON["room_id"].(string)
		ids = append(ids, id)
		protos := []rooms.Proto{
			{Sender: user, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"one"}`)},
			{Sender: user, Type: "m.room.message", Content: json.RawMessage(`{"msgtype":"m.text","body":"two"}`)},
		}
		if _, err := hs.Rooms.Send(ctx, id, protos...); err != nil {
			b.Fatalf("sending messages: %v", err)
		}
	}
	return hs, user, token, ids
}

// elementXListBody is the room list request Element X makes (its first
// window: 20 rooms, one timeline event, a few state events).
func elementXListBody() map[string]any {
	return map[string]any{
		"conn_id": "room-list",
		"lists": map[string]any{"all_rooms": map[string]any{
			"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
			"required_state": [][]string{{"m.room.name", ""}, {"m.room.avatar", ""}, {"m.room.encryption", ""},
				{"m.room.member", "$LAZY"}, {"m.room.member", "$ME"}, {"m.room.canonical_alias", ""}, {"m.room.power_levels", ""}},
		}},
	}
}

// BenchmarkSlidingSyncFirstWindow is a new room-list connection of a user
// in 500 (and 1,000) rooms: the first 20-room window.
func BenchmarkSlidingSyncFirstWindow(b *testing.B) {
	for _, n := range []int{500, 1000} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			hs, _, token, _ := benchUserRooms(b, n)
			body := elementXListBody()
			b.ReportAllocs()
			reportCPU(b)
			for b.Loop() {
				r := hs.Do(b, "POST", ssPath+"?timeout=0", token, body)
				if r.Status != 200 {
					b.Fatalf("sliding sync: %d %s", r.Status, r.Body)
				}
				if len(ssRooms(r)) != 20 || ssCount(r, "all_rooms") != n {
					b.Fatalf("window of %d rooms, count %d", len(ssRooms(r)), ssCount(r, "all_rooms"))
				}
			}
		})
	}
}

// BenchmarkSlidingSyncAfterMessage is the incremental response of a
// room-list connection (user in 500 rooms, 20-room window) after one new
// message in a room outside the window, which bumps it in. The send and
// its push evaluation are outside the timing; cpu-ns/op is the process's
// CPU time during the timed requests (client side included).
func BenchmarkSlidingSyncAfterMessage(b *testing.B) {
	hs, user, token, ids := benchUserRooms(b, 500)
	body := elementXListBody()
	r := hs.Do(b, "POST", ssPath+"?timeout=0", token, body)
	hearthtest.Expect(b, r, 200, "")
	pos := r.JSON["pos"].(string)
	ctx := context.Background()
	b.ReportAllocs()
	var cpu time.Duration // of the timed requests only
	defer func() { b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op") }()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		// The oldest room each time: always outside the window, bumped in.
		if _, err := hs.Rooms.Send(ctx, ids[i%len(ids)], rooms.Proto{Sender: user, Type: "m.room.message",
			Content: json.RawMessage(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
			b.Fatal(err)
		}
		// Push evaluates the message in the background: finish that first.
		if err := hs.Push.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := cpuTime(b)
		r := hs.Do(b, "POST", ssPath+"?timeout=0&pos="+url.QueryEscape(pos), token, body)
		cpu += cpuTime(b) - c0
		if r.Status != 200 || ssRoom(r, ids[i%len(ids)]) == nil {
			b.Fatalf("sliding sync: %d %s", r.Status, r.Body)
		}
		pos = r.JSON["pos"].(string)
	}
}

// BenchmarkSyncAfterMessage is /sync's incremental response in the same
// setting, for comparison.
func BenchmarkSyncAfterMessage(b *testing.B) {
	hs, user, token, ids := benchUserRooms(b, 500)
	r := hs.Do(b, "GET", "/_matrix/client/v3/sync?timeout=0", token, nil)
	hearthtest.Expect(b, r, 200, "")
	since := r.JSON["next_batch"].(string)
	ctx := context.Background()
	b.ReportAllocs()
	var cpu time.Duration // of the timed requests only
	defer func() { b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op") }()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if _, err := hs.Rooms.Send(ctx, ids[i%len(ids)], rooms.Proto{Sender: user, Type: "m.room.message",
			Content: json.RawMessage(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
			b.Fatal(err)
		}
		// Push evaluates the message in the background: finish that first.
		if err := hs.Push.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := cpuTime(b)
		r := hs.Do(b, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), token, nil)
		cpu += cpuTime(b) - c0
		if r.Status != 200 || path(r.JSON, "rooms", "join", ids[i%len(ids)]) == nil {
			b.Fatalf("sync: %d %s", r.Status, r.Body)
		}
		since = r.JSON["next_batch"].(string)
	}
}
