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

// Migrations 0021 and 0025 index the events stored before them: timeline
// events with a string body, name or topic, not redacted, not outliers,
// with their room, type and sender and (SQLite) their words for prefixes.
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
			// Undo the migrations, as if these events predated them.
			drops := []string{"DROP TABLE event_search"}
			if db.Dialect() == storage.SQLite {
				drops = append(drops, "DROP TABLE event_search_docs", "DROP TABLE event_search_words")
			}
			for _, q := range append(drops, "DELETE FROM schema_migrations WHERE version IN (21, 25)") {
				if _, err := tx.ExecContext(ctx, q); err != nil {
					return err
				}
			}
			return nil
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
			hits, _, err := db.Search(ctx, db.Read(), storage.SearchQuery{Phrases: storage.SearchPhrases(term), RoomIDs: []string{"!r:x"},
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
		if got := fmt.Sprint(search("backf")); got != "[$msg $name $topic]" {
			t.Fatalf("prefix: %s", got)
		}
	})
}

// indexMessages stores and indexes messages in a room as persistEvent
// does, returning their stream positions.
func indexMessages(t *testing.T, db *storage.DB, roomID string, bodies ...string) []int64 {
	t.Helper()
	ctx := context.Background()
	var out []int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		for _, body := range bodies {
			var n int
			if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM events").Scan(&n); err != nil {
				return err
			}
			id := fmt.Sprintf("$e%d", n)
			js := fmt.Sprintf(`{"event_id":%q,"type":"m.room.message","room_id":%q,"sender":"@a:x","content":{"body":%q}}`, id, roomID, body)
			e := storage.Event{EventID: id, RoomID: roomID, Type: "m.room.message", Sender: "@a:x", Depth: int64(n + 1), JSON: []byte(js)}
			pos, err := storage.InsertEvent(ctx, tx, e)
			if err != nil {
				return err
			}
			e.StreamPos = pos
			if err := db.IndexForSearch(ctx, tx, e); err != nil {
				return err
			}
			out = append(out, pos)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openSearchDB(t *testing.T, b hearthtest.Backend) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), hearthtest.DatabaseURL(t, b), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var searchTypes = []string{"m.room.message"}

// The last word of a piece matches as a prefix: on SQLite through the
// words it begins when they are few, an FTS5 prefix query when many, and
// with diacritics folded as the index folds them.
func TestSearchPrefixes(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db := openSearchDB(t, b)
		var bodies []string
		for i := 0; i < 150; i++ {
			bodies = append(bodies, fmt.Sprintf("zap%d", i))
		}
		bodies = append(bodies, "Café crème", "deux cafés", "big zap12 here", "zapper")
		indexMessages(t, db, "!r:x", bodies...)
		count := func(term string) int {
			t.Helper()
			q := storage.SearchQuery{Phrases: storage.SearchPhrases(term), RoomIDs: []string{"!r:x"}, Types: searchTypes, Limit: 500}
			hits, _, err := db.Search(ctx, db.Read(), q)
			if err != nil {
				t.Fatal(err)
			}
			n, err := db.SearchCount(ctx, db.Read(), q)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(hits) {
				t.Fatalf("%q: count %d, %d hits", term, n, len(hits))
			}
			// By rank, the first page's count is the same.
			q.ByRank = true
			if _, ranked, err := db.Search(ctx, db.Read(), q); err != nil || ranked != n {
				t.Fatalf("%q by rank: count %d (%v), want %d", term, ranked, err, n)
			}
			return n
		}
		for _, c := range []struct {
			term string
			want int
		}{
			{"zap", 152},    // more words than expand: zap0..zap149, zap12 and zapper
			{"zap1", 62},    // zap1, zap10..zap19, zap100..zap149, and zap12 again
			{"zap12", 12},   // zap12, zap120..zap129, big zap12
			{"big_zap1", 1}, // a phrase, its last word a prefix
			{"zapp", 1},
			{"zappers", 0},
			{"caf", 2},
			{"cafés", 1},
			{"CRÈME", 1},
			{"nothing", 0},
		} {
			if got := count(c.term); got != c.want {
				t.Errorf("%q: %d matches, want %d", c.term, got, c.want)
			}
		}
		// FTS5 folds diacritics (café and cafés for cafe); PostgreSQL's
		// simple configuration keeps them.
		want := map[hearthtest.Backend]int{hearthtest.SQLite: 2, hearthtest.Postgres: 0}[b]
		if got := count("cafe"); got != want {
			t.Errorf("cafe: %d matches, want %d", got, want)
		}
		if got := count("crem"); got != want/2 {
			t.Errorf("crem: %d matches, want %d", got, want/2)
		}
	})
}

// Rank order ranks the newest SearchRankWindow matches, the same ones on
// every page; the count beyond SearchCountExact is estimated.
func TestSearchRankWindow(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db := openSearchDB(t, b)
		n := storage.SearchRankWindow + 200
		bodies := make([]string, n)
		for i := range bodies {
			bodies[i] = fmt.Sprintf("windowed word with some padding words %d", i)
			if i%100 == 0 {
				bodies[i] = "windowed" // short: ranks high
			}
		}
		pos := indexMessages(t, db, "!w:x", bodies...)
		indexMessages(t, db, "!other:x", "windowed elsewhere")
		q := storage.SearchQuery{Phrases: storage.SearchPhrases("windowed"), RoomIDs: []string{"!w:x"}, Types: searchTypes, ByRank: true, Limit: 100}
		count, err := db.SearchCount(ctx, db.Read(), q)
		if err != nil {
			t.Fatal(err)
		}
		if count < n*9/10 || count > n*11/10 {
			t.Fatalf("estimated count %d, want about %d", count, n)
		}
		seen := map[int64]bool{}
		var last *storage.SearchHit
		for page := 0; ; page++ {
			hits, pageCount, err := db.Search(ctx, db.Read(), q)
			if err != nil {
				t.Fatal(err)
			}
			// The first page counts from its window, as SearchCount does;
			// later pages do not count.
			if want := map[bool]int{true: count, false: -1}[page == 0]; pageCount != want {
				t.Fatalf("page %d: count %d, want %d", page, pageCount, want)
			}
			if len(hits) == 0 {
				break
			}
			if page == 0 {
				if hits[0].StreamPos != pos[n-100] {
					t.Fatalf("best: %d, want the newest short message %d", hits[0].StreamPos, pos[n-100])
				}
				// Arrives after the first page: not in this search.
				indexMessages(t, db, "!w:x", "windowed")
			}
			for _, h := range hits {
				if seen[h.StreamPos] {
					t.Fatalf("%d twice", h.StreamPos)
				}
				seen[h.StreamPos] = true
				if h.StreamPos < pos[200] || h.StreamPos > pos[n-1] {
					t.Fatalf("%d is not among the newest %d matches", h.StreamPos, storage.SearchRankWindow)
				}
				if last != nil && (h.Rank > last.Rank || (h.Rank == last.Rank && h.StreamPos > last.StreamPos)) {
					t.Fatalf("out of order: %v after %v", h.Rank, last.Rank)
				}
				h := h
				last = &h
			}
			q.After = &storage.SearchCursor{Rank: last.Rank, StreamPos: last.StreamPos, Floor: last.Floor, Ceiling: last.Ceiling}
		}
		if len(seen) != storage.SearchRankWindow {
			t.Fatalf("%d ranked, want %d", len(seen), storage.SearchRankWindow)
		}
		// Few matches: all ranked, counted exactly.
		q = storage.SearchQuery{Phrases: storage.SearchPhrases("elsewhere"), RoomIDs: []string{"!w:x", "!other:x"}, Types: searchTypes, ByRank: true, Limit: 10}
		if count, err := db.SearchCount(ctx, db.Read(), q); err != nil || count != 1 {
			t.Fatalf("count %d, %v", count, err)
		}
	})
}
