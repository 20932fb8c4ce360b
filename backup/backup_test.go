package backup_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/backup"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// A backup taken while messages are being sent holds every message
// acknowledged before it began and every media file uploaded before it;
// restored into a new data directory, the server serves them, and the
// access tokens of the old one work. A damaged backup is refused by name.
func TestBackupUnderLoadRestores(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		if b == hearthtest.Postgres {
			for _, tool := range []string{"pg_dump", "pg_restore"} {
				if _, err := execLookPath(tool); err != nil {
					t.Fatalf("%s is needed to back up PostgreSQL (apt-get install postgresql-client)", tool)
				}
			}
		}
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{"name": "backed up"})
		hearthtest.Expect(t, r, 200, "")
		roomID := r.JSON["room_id"].(string)

		media := map[string][]byte{} // mxc → bytes
		for i := range 5 {
			body := make([]byte, 1000+i*4096)
			_, _ = rand.Read(body)
			r := hs.Do(t, "POST", "/_matrix/media/v3/upload?filename=f"+fmt.Sprint(i), tok, body)
			hearthtest.Expect(t, r, 200, "")
			media[r.JSON["content_uri"].(string)] = body
		}

		// Writers keep sending while the backup runs.
		var mu sync.Mutex
		var acked []string
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/w%d-%d", url.PathEscape(roomID), w, i)
					r := hearthtest.Do(t, httpClient, "PUT", hs.URL+path, tok, map[string]any{"msgtype": "m.text", "body": "hello"})
					if r.Status == 200 {
						mu.Lock()
						acked = append(acked, r.JSON["event_id"].(string))
						mu.Unlock()
					}
				}
			})
		}
		for { // let some land first
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 30 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		mu.Lock()
		before := append([]string(nil), acked...)
		mu.Unlock()
		dir := filepath.Join(t.TempDir(), "backup")
		var progress bytes.Buffer
		m, err := backup.Backup(context.Background(), hs.Config, dir, &progress)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("backup: %v\n%s", err, progress.String())
		}
		if m.Database != string(b) || !strings.Contains(progress.String(), "media: copied 5 files") {
			t.Fatalf("manifest says %s; progress:\n%s", m.Database, progress.String())
		}
		if _, err := backup.Verify(dir); err != nil {
			t.Fatalf("fresh backup does not verify: %v", err)
		}

		// Disaster: the server and its database are gone.
		hs.Stop(t)
		dbURL := ""
		if b == hearthtest.Postgres {
			dbURL = hs.Config.DatabaseURL
			dropSchema(t, dbURL)
		}
		restored := filepath.Join(t.TempDir(), "restored")
		if err := backup.Restore(context.Background(), dir, restored, dbURL, io.Discard); err != nil {
			t.Fatalf("restore: %v", err)
		}
		hs2 := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.DataDir = restored
			c.DatabaseURL = dbURL
			if dbURL == "" {
				c.DatabaseURL = filepath.Join(restored, "hearth.db")
			}
		})
		if hs2.Key.ID != hs.Key.ID {
			t.Fatalf("restored server signs with %s, the old one with %s", hs2.Key.ID, hs.Key.ID)
		}
		for _, id := range before {
			r := hs2.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(id), tok, nil)
			if r.Status != 200 {
				t.Fatalf("event %s, acknowledged before the backup, is missing after restore: %d %s", id, r.Status, r.Body)
			}
		}
		for mxc, want := range media {
			r := hs2.Do(t, "GET", "/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), tok, nil)
			if r.Status != 200 || !bytes.Equal(r.Body, want) {
				t.Fatalf("media %s after restore: %d, %d bytes (want %d)", mxc, r.Status, len(r.Body), len(want))
			}
		}
		t.Logf("%d events acknowledged before the backup, %d in all, all of the former restored", len(before), len(acked))

		// A damaged file is refused by name, before anything is written.
		var victim string
		for _, f := range m.Files {
			if strings.HasPrefix(f.Path, "media/") {
				victim = f.Path
				break
			}
		}
		p := filepath.Join(dir, filepath.FromSlash(victim))
		data, _ := os.ReadFile(p)
		data[len(data)/2] ^= 0xff
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		other := filepath.Join(t.TempDir(), "other")
		err = backup.Restore(context.Background(), dir, other, "", io.Discard)
		if err == nil || !strings.Contains(err.Error(), victim) {
			t.Fatalf("restore of a damaged backup: %v, want an error naming %s", err, victim)
		}
		if _, statErr := os.Stat(other); statErr == nil {
			t.Fatalf("a refused restore created %s", other)
		}
		// Nor does a backup or restore overwrite a directory in use.
		if _, err := backup.Backup(context.Background(), hs2.Config, dir, io.Discard); err == nil {
			t.Fatal("backup into a non-empty directory succeeded")
		}
		if err := backup.Restore(context.Background(), dir, restored, dbURL, io.Discard); err == nil {
			t.Fatal("restore into a non-empty data directory succeeded")
		}
	})
}

func dropSchema(t *testing.T, dsn string) {
	t.Helper()
	base, schema, err := storage.SplitSearchPath(dsn)
	if err != nil || schema == "" {
		t.Fatalf("test DSN without a schema: %v", err)
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("DROP SCHEMA " + schema + " CASCADE"); err != nil {
		t.Fatal(err)
	}
}
