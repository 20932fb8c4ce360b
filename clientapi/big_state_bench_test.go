package clientapi_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

var bigState = flag.Int("bigstate", 20000, "state events of the room of BenchmarkBigStateRoom")

// BenchmarkBigStateRoom measures requests that read a few keys of the
// current state of one room with -bigstate state events (a custom state
// type, one state key each), over real HTTP on SQLite: a sliding sync
// with nothing new whose list filters on room type (read per room: its
// create and encryption events), GET /state/m.room.name/, a page of
// /messages (its visibility check), and the room's power levels (read by
// push per event, and by permission checks).
//
//	go test -run '^$' -bench BigStateRoom ./clientapi
func BenchmarkBigStateRoom(b *testing.B) {
	hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
	user, token := hs.RegisterUser(b, "reader")
	ctx := context.Background()
	r := hs.Do(b, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "private_chat", "name": "big"})
	hearthtest.Expect(b, r, 200, "")
	roomID := r.JSON["room_id"].(string)
	body, _ := json.Marshal(map[string]string{"v": "x"})
	var batch []rooms.Proto
	for i := range *bigState {
		k := fmt.Sprint(i)
		batch = append(batch, rooms.Proto{Sender: user, Type: "org.hearth.bench.state", StateKey: &k, Content: body})
		if len(batch) == 100 || i == *bigState-1 {
			if _, err := hs.Rooms.Send(ctx, roomID, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	msg := json.RawMessage(`{"msgtype":"m.text","body":"hello"}`)
	if _, err := hs.Rooms.Send(ctx, roomID, rooms.Proto{Sender: user, Type: "m.room.message", Content: msg}); err != nil {
		b.Fatal(err)
	}
	if err := hs.Push.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	if st, err := hs.Rooms.CurrentState(ctx, roomID); err != nil || len(st) < *bigState {
		b.Fatalf("the room's state has %d entries (%v)", len(st), err)
	}

	b.Run("sliding-sync-nothing-new", func(b *testing.B) {
		list := map[string]any{
			"conn_id": "big",
			"lists": map[string]any{"rooms": map[string]any{
				"ranges": [][]int{{0, 19}}, "timeline_limit": 1,
				"required_state": [][]string{{"m.room.name", ""}},
				"filters":        map[string]any{"not_room_types": []string{"m.space"}},
			}},
		}
		r := hs.Do(b, "POST", ssPath+"?timeout=0", token, list)
		if r.Status != 200 || ssCount(r, "rooms") != 1 {
			b.Fatalf("first sliding sync: %d %s", r.Status, r.Body)
		}
		pos := r.JSON["pos"].(string)
		b.ReportAllocs()
		reportCPU(b)
		for b.Loop() {
			r := hs.Do(b, "POST", ssPath+"?timeout=0&pos="+url.QueryEscape(pos), token, list)
			if r.Status != 200 || ssCount(r, "rooms") != 1 {
				b.Fatalf("sliding sync: %d %s", r.Status, r.Body)
			}
			pos = r.JSON["pos"].(string)
		}
	})
	b.Run("get-state-name", func(b *testing.B) {
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/state/m.room.name/"
		b.ReportAllocs()
		reportCPU(b)
		for b.Loop() {
			r := hs.Do(b, "GET", path, token, nil)
			if r.Status != 200 || r.JSON["name"] != "big" {
				b.Fatalf("state: %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("messages", func(b *testing.B) {
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=1"
		b.ReportAllocs()
		reportCPU(b)
		for b.Loop() {
			r := hs.Do(b, "GET", path, token, nil)
			if r.Status != 200 || len(r.JSON["chunk"].([]any)) != 1 {
				b.Fatalf("messages: %d %s", r.Status, r.Body)
			}
		}
	})
	b.Run("power-levels", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			pl, err := hs.Rooms.PowerLevels(ctx, roomID)
			if err != nil || pl.Users[user] != 100 {
				b.Fatalf("power levels: %v %v", pl, err)
			}
		}
	})
}
