package federation_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

var joinProfile = flag.String("joinprofile", "", "write a CPU profile of the timed joins of BenchmarkJoinLargeRemoteRoom to this file")

// BenchmarkJoinLargeRemoteRoom measures how long a user of server A takes
// to join, through A's client API (POST /join, then make_join and
// send_join to B), a room on server B that has 1,000 members and 5,000
// events, on SQLite. Each timed join is from a fresh server A, so every
// one is a first join with the room's full state to fetch and check.
// B's room is filled through the room core's own send path (batches of
// 100 events, one transaction each); the fillers are a custom event type,
// so B's push evaluation writes no notification rows for them.
//
//	go test -run '^$' -bench JoinLargeRemoteRoom -benchtime 3x ./federation
//
// -joinprofile FILE writes a CPU profile of the timed joins only.
func BenchmarkJoinLargeRemoteRoom(b *testing.B) {
	const members, events = 1000, 5000
	fed := hearthtest.NewFederation(b, hearthtest.SQLite, 1+b.N, nil)
	host := fed[0]
	ctx := context.Background()
	creator, _ := host.RegisterUser(b, "creator")
	roomID, err := host.Rooms.Create(ctx, rooms.CreateRequest{Creator: creator, Preset: "public_chat"})
	if err != nil {
		b.Fatal(err)
	}
	send := func(protos []rooms.Proto) {
		if len(protos) == 0 {
			return
		}
		if _, err := host.Rooms.Send(ctx, roomID, protos...); err != nil {
			b.Fatal(err)
		}
	}
	var batch []rooms.Proto
	join, _ := json.Marshal(map[string]string{"membership": spec.Join})
	for m := 1; m < members; m++ {
		u := fmt.Sprintf("@member%d:%s", m, host.Config.ServerName)
		batch = append(batch, rooms.Proto{Sender: u, Type: spec.MRoomMember, StateKey: &u, Content: join})
		if len(batch) == 100 {
			send(batch)
			batch = batch[:0]
		}
	}
	send(batch)
	batch = batch[:0]
	var have int
	if err := host.DB.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1`, roomID).Scan(&have); err != nil {
		b.Fatal(err)
	}
	for m := have; m < events; m++ {
		body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("filler %d", m)})
		batch = append(batch, rooms.Proto{Sender: fmt.Sprintf("@member%d:%s", 1+m%(members-1), host.Config.ServerName), Type: "org.hearth.bench.filler", Content: body})
		if len(batch) == 100 {
			send(batch)
			batch = batch[:0]
		}
	}
	send(batch)
	// Let B's background work on the fill (gateway pushes) finish first.
	if err := host.Push.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	joiners := make([]fedUser, b.N)
	for i := range joiners {
		joiners[i] = newFedUser(b, fed[1+i], "joiner")
	}
	if *joinProfile != "" {
		f, err := os.Create(*joinProfile)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	path := "/_matrix/client/v3/join/" + url.PathEscape(roomID) + "?server_name=" + url.QueryEscape(host.Config.ServerName)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := range joiners {
		r := joiners[i].hs.Do(b, "POST", path, joiners[i].token, map[string]any{})
		if r.Status != http.StatusOK {
			b.Fatalf("join: %d %s", r.Status, r.Body)
		}
	}
	b.StopTimer()
	// CPU time of the whole process (both servers) per join: steadier
	// than wall time on a shared machine.
	b.ReportMetric(float64((cpuTime(b)-cpu0).Milliseconds())/float64(b.N), "cpu-ms/op")
	var n int
	last := joiners[len(joiners)-1].hs
	// The join is a partial-state one (MSC3902): the members follow.
	if err := last.Rooms.AwaitFullState(ctx, roomID); err != nil {
		b.Fatal(err)
	}
	if err := last.DB.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM current_state WHERE room_id = $1 AND membership = 'join'`, roomID).Scan(&n); err != nil {
		b.Fatal(err)
	}
	if n != members+b.N {
		b.Fatalf("the last joiner's server sees %d joined members, want %d", n, members+b.N)
	}
	b.ReportMetric(float64(events), "room-events")
}

// cpuTime is the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
