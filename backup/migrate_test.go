package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// A SQLite installation filled through the client API moves to PostgreSQL
// with migrate-db: the same users, devices and tokens (clients stay logged
// in), rooms and their history, account data and media; new messages
// continue the stream. The SQLite file is left as it was, and a second
// migration into the now non-empty database is refused.
func TestMigrateSQLiteToPostgres(t *testing.T) {
	if os.Getenv("HEARTH_TEST_POSTGRES") == "" {
		t.Skip("moving to PostgreSQL needs one: set HEARTH_TEST_POSTGRES (CI does)")
	}
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	alice, aliceTok := hs.RegisterUser(t, "alice")
	bob, bobTok := hs.RegisterUser(t, "bob")
	r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{"name": "moving", "invite": []string{bob}})
	hearthtest.Expect(t, r, 200, "")
	roomID := r.JSON["room_id"].(string)
	hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), bobTok, map[string]any{}), 200, "")
	var sent []string
	for i := range 20 {
		r := hs.Do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", url.PathEscape(roomID), i), aliceTok,
			map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("message %d", i)})
		hearthtest.Expect(t, r, 200, "")
		sent = append(sent, r.JSON["event_id"].(string))
	}
	hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice)+"/account_data/org.example.moved", aliceTok,
		map[string]any{"kept": true}), 200, "")
	body := make([]byte, 30000)
	_, _ = rand.Read(body)
	r = hs.Do(t, "POST", "/_matrix/media/v3/upload", aliceTok, body)
	hearthtest.Expect(t, r, 200, "")
	mxc := r.JSON["content_uri"].(string)
	hs.Stop(t)

	sqlitePath := hs.Config.DatabaseURL
	before, err := os.ReadFile(sqlitePath)
	if err != nil {
		t.Fatal(err)
	}
	dsn := hearthtest.DatabaseURL(t, hearthtest.Postgres)
	var progress bytes.Buffer
	copies, err := storage.CopySQLiteToPostgres(context.Background(), sqlitePath, dsn, &progress)
	if err != nil {
		t.Fatalf("migrate-db: %v\n%s", err, progress.String())
	}
	if !strings.Contains(progress.String(), "verified:") || len(copies) < 20 {
		t.Fatalf("%d tables copied; progress:\n%s", len(copies), progress.String())
	}
	after, _ := os.ReadFile(sqlitePath)
	if !bytes.Equal(before, after) {
		t.Fatal("migrate-db changed the SQLite database")
	}
	if _, err := storage.CopySQLiteToPostgres(context.Background(), sqlitePath, dsn, &progress); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("second migration into the same database: %v, want a refusal", err)
	}

	// The same data directory (signing key, media) on PostgreSQL.
	pg := hearthtest.NewServer(t, hearthtest.Postgres, func(c *config.Config) {
		c.DataDir = hs.Config.DataDir
		c.DatabaseURL = dsn
	})
	who := pg.Do(t, "GET", "/_matrix/client/v3/account/whoami", bobTok, nil)
	hearthtest.Expect(t, who, 200, "")
	if who.JSON["user_id"] != bob {
		t.Fatalf("bob's token is %v after the move", who.JSON["user_id"])
	}
	msgs := pg.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", bobTok, nil)
	hearthtest.Expect(t, msgs, 200, "")
	for _, id := range sent {
		if !bytes.Contains(msgs.Body, []byte(id)) {
			t.Fatalf("message %s is not in the room's history after the move", id)
		}
	}
	ad := pg.Do(t, "GET", "/_matrix/client/v3/user/"+url.PathEscape(alice)+"/account_data/org.example.moved", aliceTok, nil)
	hearthtest.Expect(t, ad, 200, "")
	dl := pg.Do(t, "GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), aliceTok, nil)
	if dl.Status != 200 || !bytes.Equal(dl.Body, body) {
		t.Fatalf("media after the move: %d, %d bytes", dl.Status, len(dl.Body))
	}
	// Full-text search finds what was written on SQLite: the index is
	// rebuilt in PostgreSQL's shape, not copied.
	sr := pg.Do(t, "POST", "/_matrix/client/v3/search", aliceTok, map[string]any{"search_categories": map[string]any{
		"room_events": map[string]any{"search_term": "message"}}})
	hearthtest.Expect(t, sr, 200, "")
	if !bytes.Contains(sr.Body, []byte(sent[19])) || !bytes.Contains(sr.Body, []byte(`"count":20`)) {
		t.Fatalf("search after the move does not find the copied messages: %.500s", sr.Body)
	}
	// New writes continue past the copied rows (sequences moved).
	next := pg.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/after", bobTok,
		map[string]any{"msgtype": "m.text", "body": "on PostgreSQL now"})
	hearthtest.Expect(t, next, 200, "")
	_, newTok := pg.RegisterUser(t, "carol")
	hearthtest.Expect(t, pg.Do(t, "POST", "/_matrix/client/v3/createRoom", newTok, map[string]any{}), 200, "")
	sync := pg.Do(t, "GET", "/_matrix/client/v3/sync", bobTok, nil)
	hearthtest.Expect(t, sync, 200, "")
	if !bytes.Contains(sync.Body, []byte("on PostgreSQL now")) {
		t.Fatal("a message sent after the move is not in bob's sync")
	}
}

// cancelAfter is a progress writer that cancels the migration once it
// has reported n tables: an interruption in the middle of the copy.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
	buf    bytes.Buffer
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if bytes.HasPrefix(p, []byte("[")) {
		if c.n--; c.n == 0 {
			c.cancel()
		}
	}
	return c.buf.Write(p)
}

// A migration interrupted halfway leaves the target as it was, so running
// it again succeeds, and the server on PostgreSQL has everything.
func TestMigrateInterruptedCanBeRerun(t *testing.T) {
	if os.Getenv("HEARTH_TEST_POSTGRES") == "" {
		t.Skip("moving to PostgreSQL needs one: set HEARTH_TEST_POSTGRES (CI does)")
	}
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	_, tok := hs.RegisterUser(t, "alice")
	r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{"name": "interrupted"})
	hearthtest.Expect(t, r, 200, "")
	roomID := r.JSON["room_id"].(string)
	hs.Stop(t)
	dsn := hearthtest.DatabaseURL(t, hearthtest.Postgres)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut := &cancelAfter{n: 10, cancel: cancel}
	if _, err := storage.CopySQLiteToPostgres(ctx, hs.Config.DatabaseURL, dsn, cut); err == nil ||
		!strings.Contains(err.Error(), "can be run again") {
		t.Fatalf("interrupted migration: %v, want an error saying it can be run again\n%s", err, cut.buf.String())
	}
	if !strings.Contains(cut.buf.String(), "[10/") || strings.Contains(cut.buf.String(), "verified") {
		t.Fatalf("the migration was not interrupted halfway:\n%s", cut.buf.String())
	}
	var progress bytes.Buffer
	if _, err := storage.CopySQLiteToPostgres(context.Background(), hs.Config.DatabaseURL, dsn, &progress); err != nil {
		t.Fatalf("rerun after the interruption: %v\n%s", err, progress.String())
	}
	pg := hearthtest.NewServer(t, hearthtest.Postgres, func(c *config.Config) {
		c.DataDir = hs.Config.DataDir
		c.DatabaseURL = dsn
	})
	r = pg.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name", tok, nil)
	hearthtest.Expect(t, r, 200, "")
	if r.JSON["name"] != "interrupted" {
		t.Fatalf("room name after the rerun: %s", r.Body)
	}
}
