package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// Benchmarks of the hot client API paths through real HTTP on SQLite, for
// `go test -bench` with -cpuprofile (docs/performance.md). They never run
// in a plain `go test`. cmd/hearth-bench measures the same paths under load.

// benchRoom creates a public room owned by a new user, with members-1 other
// members and about prior events in all.
func benchRoom(b *testing.B, hs *hearthtest.Server, members, prior int) (roomID, ownerToken string) {
	b.Helper()
	owner, token := hs.RegisterUser(b, "owner")
	r := hs.Do(b, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(b, r, 200, "")
	roomID = r.JSON["room_id"].(string)
	ctx := context.Background()
	for i := 1; i < members; i++ {
		// No password: nothing to hash, so a thousand members are quick.
		login, err := hs.Accounts.Register(ctx, accounts.NewUser{Localpart: fmt.Sprintf("member%d", i)})
		if err != nil {
			b.Fatalf("registering member %d: %v", i, err)
		}
		hearthtest.Expect(b, hs.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), login.AccessToken, map[string]any{}), 200, "")
	}
	// Earlier history, sent in batches (one transaction each) to keep the
	// setup short; the room's state is what it would be after single sends.
	for sent := members + 5; sent < prior; {
		n := min(500, prior-sent)
		protos := make([]rooms.Proto, n)
		for i := range protos {
			protos[i] = rooms.Proto{Sender: owner, Type: "m.room.message",
				Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"history %d"}`, sent+i))}
		}
		if _, err := hs.Rooms.Send(ctx, roomID, protos...); err != nil {
			b.Fatalf("sending history: %v", err)
		}
		sent += n
	}
	return roomID, token
}

// cpuTime is the CPU time (user and system) this process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the metric cpu-ns/op, the process's CPU time per operation
// from now until the benchmark ends (server and client, in one process).
// On a shared machine wall time per op moves with the load of other jobs;
// CPU time moves much less, so compare it first (docs/performance.md).
func reportCPU(b *testing.B) {
	start := cpuTime(b)
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		}
	})
}

// BenchmarkSend is one PUT /send in rooms of different sizes: the cost of a
// message must not grow with the room's history or membership.
func BenchmarkSend(b *testing.B) {
	for _, size := range []struct{ members, prior int }{{2, 10}, {2, 10_000}, {1000, 10}, {1000, 10_000}} {
		b.Run(fmt.Sprintf("members=%d/prior=%d", size.members, size.prior), func(b *testing.B) {
			hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
			roomID, token := benchRoom(b, hs, size.members, size.prior)
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
			body := map[string]any{"msgtype": "m.text", "body": "hello"}
			b.ReportAllocs()
			reportCPU(b)
			for i := 0; b.Loop(); i++ {
				r := hs.Do(b, "PUT", path+fmt.Sprintf("t%d", i), token, body)
				if r.Status != 200 {
					b.Fatalf("send: %d %s", r.Status, r.Body)
				}
			}
		})
	}
}

// BenchmarkSyncNothingNew is an incremental sync with nothing to deliver
// (timeout=0): what every idle client costs on each poll.
func BenchmarkSyncNothingNew(b *testing.B) {
	hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
	_, token := benchRoom(b, hs, 2, 20)
	r := hs.Do(b, "GET", "/_matrix/client/v3/sync", token, nil)
	hearthtest.Expect(b, r, 200, "")
	since := url.QueryEscape(r.JSON["next_batch"].(string))
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		r := hs.Do(b, "GET", "/_matrix/client/v3/sync?timeout=0&since="+since, token, nil)
		if r.Status != 200 {
			b.Fatalf("sync: %d %s", r.Status, r.Body)
		}
	}
}

// BenchmarkInitialSync100Rooms is a full initial sync of a user in 100
// rooms with 20 messages each.
func BenchmarkInitialSync100Rooms(b *testing.B) {
	hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
	user, token := hs.RegisterUser(b, "reader")
	ctx := context.Background()
	for i := range 100 {
		r := hs.Do(b, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "private_chat", "name": fmt.Sprintf("room %d", i)})
		hearthtest.Expect(b, r, 200, "")
		protos := make([]rooms.Proto, 20)
		for j := range protos {
			protos[j] = rooms.Proto{Sender: user, Type: "m.room.message",
				Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, j))}
		}
		if _, err := hs.Rooms.Send(ctx, r.JSON["room_id"].(string), protos...); err != nil {
			b.Fatalf("sending messages: %v", err)
		}
	}
	b.ReportAllocs()
	reportCPU(b)
	for b.Loop() {
		r := hs.Do(b, "GET", "/_matrix/client/v3/sync", token, nil)
		if r.Status != 200 {
			b.Fatalf("sync: %d %s", r.Status, r.Body)
		}
		if n := len(path(r.JSON, "rooms", "join").(map[string]any)); n != 100 {
			b.Fatalf("initial sync has %d joined rooms, want 100", n)
		}
	}
}

// BenchmarkSendConcurrent is the send workload of hearth-bench in one
// process: 20 members of one room sending at once, one request in flight
// each, so sends wait for each other and the room's group commit batches
// them. Profile it with -cpuprofile (docs/performance.md).
func BenchmarkSendConcurrent(b *testing.B) {
	const senders = 20
	hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
	roomID, ownerToken := benchRoom(b, hs, 2, 10)
	tokens := []string{ownerToken}
	for i := 1; i < senders; i++ {
		login, err := hs.Accounts.Register(context.Background(), accounts.NewUser{Localpart: fmt.Sprintf("sender%d", i)})
		if err != nil {
			b.Fatalf("registering sender %d: %v", i, err)
		}
		hearthtest.Expect(b, hs.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), login.AccessToken, map[string]any{}), 200, "")
		tokens = append(tokens, login.AccessToken)
	}
	path := hs.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var next atomic.Int64
	// writer-ns/op: how long SQLite's one writer was held per send (the
	// sends' transactions and everything else's, push included): the
	// resource every send queues for.
	var writerBusy atomic.Int64
	hs.DB.ObserveWriteTx(func(d time.Duration, _ bool) { writerBusy.Add(int64(d)) })
	b.Cleanup(func() { b.ReportMetric(float64(writerBusy.Load())/float64(b.N), "writer-ns/op") })
	b.ReportAllocs()
	reportCPU(b)
	b.SetParallelism((senders + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	b.RunParallel(func(pb *testing.PB) {
		n := next.Add(1)
		token := tokens[int(n-1)%len(tokens)]
		for i := 0; pb.Next(); i++ {
			req, _ := http.NewRequest("PUT", fmt.Sprintf("%sp%dt%d", path, n, i), strings.NewReader(`{"msgtype":"m.text","body":"hello"}`))
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := client.Do(req)
			if err != nil {
				b.Errorf("send: %v", err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("send: status %d", resp.StatusCode)
				return
			}
		}
	})
}
