package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// Sliding sync positions: owned by one connection, bounded per connection
// and per device, dropped before the one a client continues from, and
// expired with their idle connection.
func TestSlidingSyncPositions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db, err := storage.Open(ctx, hearthtest.DatabaseURL(t, b), storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		conn := storage.SlidingConn{UserID: "@a:x", DeviceID: "D", ConnID: "room-list"}
		save := func(c storage.SlidingConn, prev int64, state string, now int64) int64 {
			t.Helper()
			id, err := db.SaveSlidingPos(ctx, c, prev, []byte(state), now, 0)
			if err != nil {
				t.Fatalf("save after %d: %v", prev, err)
			}
			return id
		}
		load := func(c storage.SlidingConn, pos, idleBefore int64) (string, error) {
			b, err := db.LoadSlidingPos(ctx, c, pos, idleBefore)
			return string(b), err
		}
		p1 := save(conn, 0, "one", 10)
		p2 := save(conn, p1, "two", 11)
		if s, err := load(conn, p1, 0); err != nil || s != "one" {
			t.Fatalf("p1 before continuing from p2: %q %v", s, err)
		}
		// Continuing from p2 drops p1.
		p3 := save(conn, p2, "three", 12)
		if _, err := load(conn, p1, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("p1 kept: %v", err)
		}
		if s, err := load(conn, p3, 0); err != nil || s != "three" {
			t.Fatalf("p3: %q %v", s, err)
		}
		// Other users, devices and conn_ids do not see it.
		for _, other := range []storage.SlidingConn{{UserID: "@b:x", DeviceID: "D", ConnID: "room-list"},
			{UserID: "@a:x", DeviceID: "E", ConnID: "room-list"}, {UserID: "@a:x", DeviceID: "D", ConnID: "encryption"}} {
			if _, err := load(other, p3, 0); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("%+v sees p3: %v", other, err)
			}
		}
		// Retries from one position keep it and only the newest five others.
		var retries []int64
		for i := range 8 {
			retries = append(retries, save(conn, p3, fmt.Sprint("retry", i), 13))
		}
		if _, err := load(conn, retries[2], 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("old retry kept: %v", err)
		}
		if _, err := load(conn, retries[7], 0); err != nil {
			t.Fatalf("newest retry: %v", err)
		}
		if _, err := load(conn, p3, 0); err != nil {
			t.Fatalf("the position retried from: %v", err)
		}
		// A new connection (no prev) replaces the conn_id's state.
		fresh := save(conn, 0, "fresh", 14)
		if _, err := load(conn, retries[7], 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("replaced connection's pos kept: %v", err)
		}
		// A request that loaded a position of the replaced connection
		// cannot save after it.
		if _, err := db.SaveSlidingPos(ctx, conn, retries[7], []byte("x"), 15, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("save after a replaced connection's pos: %v", err)
		}
		// Idle connections expire.
		if _, err := load(conn, fresh, 100); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("idle connection still loads: %v", err)
		}
		// A device keeps at most ten connections: the least recently used go.
		var first int64
		for i := range 11 {
			id := save(storage.SlidingConn{UserID: "@a:x", DeviceID: "MANY", ConnID: fmt.Sprint("c", i)}, 0, "s", int64(100+i))
			if i == 0 {
				first = id
			}
		}
		if _, err := load(storage.SlidingConn{UserID: "@a:x", DeviceID: "MANY", ConnID: "c0"}, first, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("eleventh connection did not push out the oldest: %v", err)
		}
	})
}
