package federation_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

var (
	psMembers = flag.Int("psmembers", 10000, "members of the room BenchmarkPartialStateJoin joins")
	psState   = flag.Int("psstate", 50000, "state events of that room (members included)")
)

// BenchmarkPartialStateJoin measures a partial-state join (MSC3902)
// between two Hearth servers on SQLite: a user of server A joins a room of
// server B with -psmembers members and -psstate state events (the others
// are a custom state type, one state key each), then sends a message.
// join-ms is POST /join until it answers, send-ms until the user's first
// message is sent as well, complete-ms until A holds the room's full
// state (the background resync done). Each join is from a fresh server A.
// B's room is filled through the room core's send path in batches of 100.
//
//	go test -run '^$' -bench PartialStateJoin -benchtime 1x -timeout 30m ./federation
func BenchmarkPartialStateJoin(b *testing.B) {
	members, states := *psMembers, *psState
	fed := hearthtest.NewFederation(b, hearthtest.SQLite, 1+b.N, nil)
	host := fed[0]
	ctx := context.Background()
	creator, _ := host.RegisterUser(b, "creator")
	name := "big"
	roomID, err := host.Rooms.Create(ctx, rooms.CreateRequest{Creator: creator, Preset: "public_chat", Name: &name})
	if err != nil {
		b.Fatal(err)
	}
	var batch []rooms.Proto
	flush := func() {
		if len(batch) > 0 {
			if _, err := host.Rooms.Send(ctx, roomID, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	add := func(p rooms.Proto) {
		if batch = append(batch, p); len(batch) == 100 {
			flush()
		}
	}
	join, _ := json.Marshal(map[string]string{"membership": spec.Join})
	for m := 1; m < members; m++ {
		u := fmt.Sprintf("@member%d:%s", m, host.Config.ServerName)
		add(rooms.Proto{Sender: u, Type: spec.MRoomMember, StateKey: &u, Content: join})
	}
	body, _ := json.Marshal(map[string]string{"v": "x"})
	for s := members + 6; s < states; s++ { // creation made about six
		k := fmt.Sprint(s)
		add(rooms.Proto{Sender: creator, Type: "org.hearth.bench.state", StateKey: &k, Content: body})
	}
	flush()
	// Let B's background work on the fill (gateway pushes) finish first.
	if err := host.Push.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	cur, err := host.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		b.Fatal(err)
	}
	joiners := make([]fedUser, b.N)
	for i := range joiners {
		joiners[i] = newFedUser(b, fed[1+i], "joiner")
	}
	path := "/_matrix/client/v3/join/" + url.PathEscape(roomID) + "?server_name=" + url.QueryEscape(host.Config.ServerName)
	var joinT, sendT, completeT time.Duration
	b.ResetTimer()
	for i, j := range joiners {
		start := time.Now()
		if r := j.hs.Do(b, "POST", path, j.token, map[string]any{}); r.Status != http.StatusOK {
			b.Fatalf("join: %d %s", r.Status, r.Body)
		}
		joinT += time.Since(start)
		r := j.hs.Do(b, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+fmt.Sprint(i), j.token, map[string]any{"msgtype": "m.text", "body": "hello"})
		if r.Status != http.StatusOK {
			b.Fatalf("send: %d %s", r.Status, r.Body)
		}
		sendT += time.Since(start)
		if err := j.hs.Rooms.AwaitFullState(ctx, roomID); err != nil {
			b.Fatal(err)
		}
		completeT += time.Since(start)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(joinT.Milliseconds())/n, "join-ms")
	b.ReportMetric(float64(sendT.Milliseconds())/n, "send-ms")
	b.ReportMetric(float64(completeT.Milliseconds())/n, "complete-ms")
	b.ReportMetric(float64(len(cur)), "state-events")
	last := joiners[len(joiners)-1].hs
	got, err := last.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		b.Fatal(err)
	}
	if len(got) != len(cur)+1 {
		b.Fatalf("the joiner's server holds %d state events, want %d", len(got), len(cur)+1)
	}
}
