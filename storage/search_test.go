package storage_test

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// Migration 0021 indexes the events stored before it: timeline events
// with a string body, name or topic, not redacted, not outliers.
func TestSearchMigrationBackfills(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		url := hearthtest.DatabaseURL(t, b)
		db, err := storage.Open(ctx, url, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		redacted := "$redaction"
		evs := []struct {
			id, typ, content string
			outlier          bool
			redactedBy       *string
			want             bool
		}{
			{"$msg", "m.room.message", `{"body":"Backfill this_one, please","msgtype":"m.text"}`, false, nil, true},
			{"$name", "m.room.name", `{"name":"Backfill room"}`, false, nil, true},
			{"$topic", "m.room.topic", `{"topic":"backfill topic"}`, false, nil, true},
			{"$other", "m.room.message", `{"body":"nothing here"}`, false, nil, false},
			{"$number", "m.room.message", `{"body":7}`, false, nil, false},
			{"$outlier", "m.room.message", `{"body":"backfill outlier"}`, true, nil, false},
			{"$redacted", "m.room.message", `{"body":"backfill redacted"}`, false, &redacted, false},
			{"$custom", "m.custom", `{"body":"backfill custom"}`, false, nil, false},
		}
		err = db.WriteTx(ctx, func(tx *sql.Tx) error {
			for i, e := range evs {
				js := fmt.Sprintf(`{"event_id":%q,"type":%q,"room_id":"!r:x","sender":"@a:x","content":%s}`, e.id, e.typ, e.content)
				if _, err := storage.InsertEvent(ctx, tx, storage.Event{EventID: e.id, RoomID: "!r:x", Type: e.typ, Sender: "@a:x",
					Depth: int64(i + 1), Outlier: e.outlier, JSON: []byte(js)}); err != nil {
					return err
				}
				if e.redactedBy != nil {
					if err := storage.MarkRedacted(ctx, tx, e.id, *e.redactedBy); err != nil {
						return err
					}
				}
			}
			// Undo the migration, as if these events predated it.
			if _, err := tx.ExecContext(ctx, "DROP TABLE event_search"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = 21")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		if db, err = storage.Open(ctx, url, storage.Options{}); err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer db.Close()
		search := func(term string) []string {
			t.Helper()
			hits, err := db.Search(ctx, db.Read(), storage.SearchQuery{Phrases: storage.SearchPhrases(term), RoomIDs: []string{"!r:x"},
				Types: []string{"m.room.message", "m.room.name", "m.room.topic", "m.custom"}, Limit: 50})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, h := range hits {
				ids = append(ids, h.EventID)
			}
			sort.Strings(ids)
			return ids
		}
		if got := fmt.Sprint(search("backfill")); got != "[$msg $name $topic]" {
			t.Fatalf("backfilled: %s", got)
		}
		if got := fmt.Sprint(search("this_one")); got != "[$msg]" {
			t.Fatalf("phrase: %s", got)
		}
	})
}
