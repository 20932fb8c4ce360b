package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// Fan-out benchmarks (issue 20): the cost of the incremental syncs that
// carry one new message to the members of a room, as hearth-bench's fanout
// workload makes them (receivers that never send read receipts, so their
// unread counts grow with every message).

// fanoutFilter is hearth-bench's quietFilter: room timelines only.
const fanoutFilter = `{"presence":{"not_types":["*"]},"room":{"timeline":{"limit":50},"ephemeral":{"not_types":["*"]}}}`

// fanoutRoom creates a room of an owner and receivers other members, with
// unread messages from the owner that none of them has read, and gives
// each receiver's token and sync token after an initial sync.
func fanoutRoom(b *testing.B, hs *hearthtest.Server, receivers, unread int) (roomID, owner, ownerToken string, tokens, since []string) {
	b.Helper()
	owner, ownerToken = hs.RegisterUser(b, "owner")
	r := hs.Do(b, "POST", "/_matrix/client/v3/createRoom", ownerToken, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(b, r, 200, "")
	roomID = r.JSON["room_id"].(string)
	ctx := context.Background()
	for i := range receivers {
		login, err := hs.Accounts.Register(ctx, accounts.NewUser{Localpart: fmt.Sprintf("receiver%d", i)})
		if err != nil {
			b.Fatalf("registering receiver %d: %v", i, err)
		}
		hearthtest.Expect(b, hs.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), login.AccessToken, map[string]any{}), 200, "")
		tokens = append(tokens, login.AccessToken)
	}
	for sent := 0; sent < unread; {
		n := min(500, unread-sent)
		protos := make([]rooms.Proto, n)
		for i := range protos {
			protos[i] = rooms.Proto{Sender: owner, Type: "m.room.message",
				Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"unread %d"}`, sent+i))}
		}
		if _, err := hs.Rooms.Send(ctx, roomID, protos...); err != nil {
			b.Fatalf("sending history: %v", err)
		}
		sent += n
	}
	if err := hs.Push.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	for i, tok := range tokens {
		r := hs.Do(b, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(fanoutFilter), tok, nil)
		hearthtest.Expect(b, r, 200, "")
		if unread > 0 {
			if n := path(r.JSON, "rooms", "join", roomID, "unread_notifications", "notification_count"); n != float64(unread) {
				b.Fatalf("receiver %d: notification_count %v, want %d", i, n, unread)
			}
		}
		since = append(since, r.JSON["next_batch"].(string))
	}
	return roomID, owner, ownerToken, tokens, since
}

// BenchmarkSyncOneNewMessage is one incremental sync (timeout=0) of a
// member of a 50-member room that carries one new message, with 0 or
// 1,000 earlier messages unread. An op is one sync; every member syncs
// once per message (the send is outside the timing). cpu-ns/op is the
// process's CPU during the timed syncs, the test client's included.
func BenchmarkSyncOneNewMessage(b *testing.B) {
	for _, unread := range []int{0, 1000} {
		b.Run(fmt.Sprintf("members=50/unread=%d", unread), func(b *testing.B) {
			const receivers = 49
			hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
			roomID, owner, _, tokens, since := fanoutRoom(b, hs, receivers, unread)
			ctx := context.Background()
			q := "/_matrix/client/v3/sync?timeout=0&filter=" + url.QueryEscape(fanoutFilter) + "&since="
			b.ReportAllocs()
			b.ResetTimer()
			var cpu time.Duration
			defer func() { b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op") }()
			for i := 0; i < b.N; i++ {
				k := i % receivers
				if k == 0 {
					b.StopTimer()
					if _, err := hs.Rooms.Send(ctx, roomID, rooms.Proto{Sender: owner, Type: "m.room.message",
						Content: json.RawMessage(`{"msgtype":"m.text","body":"new"}`)}); err != nil {
						b.Fatal(err)
					}
					if err := hs.Push.Flush(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				c0 := cpuTime(b)
				r := hs.Do(b, "GET", q+url.QueryEscape(since[k]), tokens[k], nil)
				cpu += cpuTime(b) - c0
				if r.Status != 200 {
					b.Fatalf("sync: %d %s", r.Status, r.Body)
				}
				if evs, _ := path(r.JSON, "rooms", "join", roomID, "timeline", "events").([]any); len(evs) != 1 {
					b.Fatalf("sync carries %d events, want 1: %s", len(evs), r.Body)
				}
				since[k] = r.JSON["next_batch"].(string)
			}
		})
	}
}

// BenchmarkFanoutOneMessage is hearth-bench's fanout step in one process:
// 49 members long-poll /sync, one message is sent over HTTP, and the op
// ends when every member has the response carrying it. cpu-ns/op is all
// the CPU of the process per message (the send, the wake-ups, the 49
// responses and the test client); unread earlier messages as above.
func BenchmarkFanoutOneMessage(b *testing.B) {
	for _, unread := range []int{0, 1000} {
		b.Run(fmt.Sprintf("members=50/unread=%d", unread), func(b *testing.B) {
			const receivers = 49
			hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
			roomID, _, ownerToken, tokens, since := fanoutRoom(b, hs, receivers, unread)
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: receivers + 2}}
			q := "/_matrix/client/v3/sync?timeout=30000&filter=" + url.QueryEscape(fanoutFilter) + "&since="
			sendPath := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
			b.ReportAllocs()
			b.ResetTimer()
			reportCPU(b)
			for i := 0; b.Loop(); i++ {
				var wg sync.WaitGroup
				errs := make([]string, receivers)
				for k := range receivers {
					wg.Go(func() {
						r := hearthtest.Do(b, client, "GET", hs.URL+q+url.QueryEscape(since[k]), tokens[k], nil)
						evs, _ := path(r.JSON, "rooms", "join", roomID, "timeline", "events").([]any)
						if r.Status != 200 || len(evs) != 1 {
							errs[k] = fmt.Sprintf("receiver %d: %d, %d events: %s", k, r.Status, len(evs), r.Body)
							return
						}
						since[k] = r.JSON["next_batch"].(string)
					})
				}
				r := hearthtest.Do(b, client, "PUT", hs.URL+sendPath+fmt.Sprintf("f%d", i), ownerToken, map[string]any{"msgtype": "m.text", "body": "new"})
				hearthtest.Expect(b, r, 200, "")
				wg.Wait()
				for _, e := range errs {
					if e != "" {
						b.Fatal(e)
					}
				}
			}
		})
	}
}
