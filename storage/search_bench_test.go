package storage_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// BenchmarkSearch fills 1,000 rooms with HEARTH_SEARCH_BENCH_EVENTS
// messages (default 100,000) through the storage layer, as persistEvent
// writes them (InsertEvent then IndexForSearch in one transaction), and
// measures the index's queries as /search runs them: one page of 10
// (page-p50-ms) and the count of matches (count-p50-ms), which /search
// runs for the first page only and only in recent order (the first page by
// rank counts the window it ranks); p50-ms and ns/op are both together. It also fills a second database without the index and
// reports the insert time and disk size of both:
//
//	go test ./storage -run '^$' -bench BenchmarkSearch -benchtime 200x
//
// With HEARTH_SEARCH_BENCH_DIR set, SQLite's filled databases are kept in
// that directory and reused by later runs, the indexed one per schema (a
// hash of storage/migrations) and the plain one only as its fill time and
// size, so that a 1,000,000-event fill is paid once.
//
// Words come from a 20,000-word vocabulary with a Zipf distribution, so a
// common word matches a large share of the messages and a rare one few.
func BenchmarkSearch(b *testing.B) {
	n := 100000
	if s := os.Getenv("HEARTH_SEARCH_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	const nRooms = 1000
	for _, backend := range hearthtest.Backends() {
		b.Run(string(backend), func(b *testing.B) {
			ctx := context.Background()
			db, tIndexed, sIndexed := filledBench(b, backend, n, nRooms, true)
			plain, tPlain, sPlain := filledBench(b, backend, n, nRooms, false)
			b.Logf("%s: %d events in %d rooms: insert %v with the index (%.1f µs/event), %v without (%.1f µs/event), +%.0f%%; size %.1f MB with, %.1f MB without, +%.0f%%",
				backend, n, nRooms, tIndexed.Round(time.Millisecond), float64(tIndexed.Microseconds())/float64(n),
				tPlain.Round(time.Millisecond), float64(tPlain.Microseconds())/float64(n), 100*(tIndexed.Seconds()/tPlain.Seconds()-1),
				float64(sIndexed)/1e6, float64(sPlain)/1e6, 100*(float64(sIndexed)/float64(sPlain)-1))
			if plain != nil {
				plain.Close()
			}

			var all, some []string
			for i := 0; i < nRooms; i++ {
				all = append(all, benchRoomID(i))
			}
			some = all[:50]
			types := []string{"m.room.message", "m.room.name", "m.room.topic"}
			cases := []struct {
				name   string
				term   string
				rooms  []string
				byRank bool
			}{
				{"common/1000rooms/rank", benchWord(0), all, true},
				{"common/1000rooms/recent", benchWord(0), all, false},
				{"common/50rooms/rank", benchWord(0), some, true},
				{"common/50rooms/recent", benchWord(0), some, false},
				{"mid/1000rooms/rank", benchWord(100), all, true},
				{"mid/1000rooms/recent", benchWord(100), all, false},
				{"rare/1000rooms/rank", benchWord(5000), all, true},
				{"rare/1000rooms/recent", benchWord(5000), all, false},
				{"prefix/1000rooms/rank", benchWord(100)[:3], all, true},
				{"prefix/1000rooms/recent", benchWord(100)[:3], all, false},
				{"twowords/1000rooms/rank", benchWord(3) + " " + benchWord(40), all, true},
				{"twowords/1000rooms/recent", benchWord(3) + " " + benchWord(40), all, false},
			}
			for _, c := range cases {
				b.Run(c.name, func(b *testing.B) {
					q := storage.SearchQuery{Phrases: storage.SearchPhrases(c.term), RoomIDs: c.rooms, Types: types, ByRank: c.byRank, Limit: 10}
					count, err := db.SearchCount(ctx, db.Read(), q)
					if err != nil {
						b.Fatal(err)
					}
					pages, counts, times := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						start := time.Now()
						_, n, err := db.Search(ctx, db.Read(), q)
						if err != nil {
							b.Fatal(err)
						}
						mid := time.Now()
						if n < 0 { // as /search: the first page by rank counted already
							if _, err := db.SearchCount(ctx, db.Read(), q); err != nil {
								b.Fatal(err)
							}
						}
						end := time.Now()
						pages, counts, times = append(pages, mid.Sub(start)), append(counts, end.Sub(mid)), append(times, end.Sub(start))
					}
					b.StopTimer()
					p50 := func(ds []time.Duration) float64 {
						sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
						return float64(ds[len(ds)/2].Microseconds()) / 1000
					}
					b.ReportMetric(p50(times), "p50-ms")
					b.ReportMetric(float64(times[0].Microseconds())/1000, "min-ms") // times is sorted
					b.ReportMetric(p50(pages), "page-p50-ms")
					b.ReportMetric(p50(counts), "count-p50-ms")
					b.ReportMetric(float64(count), "matches")
				})
			}
			db.Close()
		})
	}
}

// benchFill is what a fill cost, kept next to a reused database.
type benchFill struct {
	Elapsed time.Duration
	Size    int64
}

// filledBench returns a database filled with n messages (nil when only
// the plain fill's cost is asked for and was kept from an earlier run),
// the time the fill took and the database's size on disk.
func filledBench(b *testing.B, backend hearthtest.Backend, n, nRooms int, index bool) (*storage.DB, time.Duration, int64) {
	dir := os.Getenv("HEARTH_SEARCH_BENCH_DIR")
	if dir == "" || backend != hearthtest.SQLite {
		url := hearthtest.DatabaseURL(b, backend)
		db := openBench(b, url)
		elapsed := fillBench(b, db, n, nRooms, index)
		return db, elapsed, dbSize(b, &db, url)
	}
	name := fmt.Sprintf("%s-%d-plain", backend, n)
	if index {
		name = fmt.Sprintf("%s-%d-index-%s", backend, n, migrationsHash(b))
	}
	url, meta := filepath.Join(dir, name+".db"), filepath.Join(dir, name+".json")
	var f benchFill
	if js, err := os.ReadFile(meta); err == nil {
		if err := json.Unmarshal(js, &f); err != nil {
			b.Fatal(err)
		}
		if !index {
			return nil, f.Elapsed, f.Size
		}
		b.Logf("reusing %s, filled in %v", url, f.Elapsed)
		return openBench(b, url), f.Elapsed, f.Size
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		_ = os.Remove(url + suffix)
	}
	db := openBench(b, url)
	f.Elapsed = fillBench(b, db, n, nRooms, index)
	f.Size = dbSize(b, &db, url)
	js, _ := json.Marshal(f)
	if err := os.WriteFile(meta, js, 0o644); err != nil {
		b.Fatal(err)
	}
	if !index {
		db.Close()
		for _, suffix := range []string{"", "-wal", "-shm"} {
			_ = os.Remove(url + suffix)
		}
		return nil, f.Elapsed, f.Size
	}
	return db, f.Elapsed, f.Size
}

// migrationsHash names the schema the migrations make.
func migrationsHash(b *testing.B) string {
	files, err := filepath.Glob("migrations/*.sql")
	if err != nil || len(files) == 0 {
		b.Fatalf("listing migrations: %v", err)
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

func openBench(b *testing.B, url string) *storage.DB {
	db, err := storage.Open(context.Background(), url, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return db
}

func benchRoomID(i int) string { return fmt.Sprintf("!room%04d:bench.example", i) }

var syllables = []string{"ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da", "qua", "zen", "bri", "fo", "gul", "ix"}

// benchWord is the vocabulary's word of rank i (0 the most frequent).
func benchWord(i int) string {
	var sb strings.Builder
	for i = i + 17; i > 0; i /= len(syllables) {
		sb.WriteString(syllables[i%len(syllables)])
	}
	return sb.String()
}

// fillBench inserts n messages round-robin into nRooms rooms, 1,000 per
// transaction, and returns how long it took.
func fillBench(b *testing.B, db *storage.DB, n, nRooms int, index bool) time.Duration {
	ctx := context.Background()
	rng := rand.New(rand.NewSource(1))
	zipf := rand.NewZipf(rng, 1.1, 1, 19999)
	start := time.Now()
	for done := 0; done < n; {
		err := db.WriteTx(ctx, func(tx *sql.Tx) error {
			for k := 0; k < 1000 && done < n; k, done = k+1, done+1 {
				words := make([]string, 3+rng.Intn(18))
				for i := range words {
					words[i] = benchWord(int(zipf.Uint64()))
				}
				body := strings.Join(words, " ")
				id := fmt.Sprintf("$ev%d:bench.example", done)
				room := benchRoomID(done % nRooms)
				sender := fmt.Sprintf("@user%d:bench.example", rng.Intn(100))
				js := fmt.Sprintf(`{"auth_events":[],"content":{"body":%q,"msgtype":"m.text"},"depth":%d,"event_id":%q,"hashes":{"sha256":"x"},"origin_server_ts":%d,"prev_events":[],"room_id":%q,"sender":%q,"signatures":{},"type":"m.room.message"}`,
					body, done/nRooms+10, id, 1700000000000+int64(done), room, sender)
				e := storage.Event{EventID: id, RoomID: room, Type: "m.room.message", Sender: sender, Depth: int64(done/nRooms + 10),
					OriginTS: 1700000000000 + int64(done), SnapshotBefore: 1, SnapshotAfter: 1, JSON: []byte(js)}
				pos, err := storage.InsertEvent(ctx, tx, e)
				if err != nil {
					return err
				}
				if index {
					e.StreamPos = pos
					if err := db.IndexForSearch(ctx, tx, e); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return time.Since(start)
}

// dbSize is the database's size on disk: the SQLite file and its WAL
// after closing, which checkpoints (and then reopens it), or the
// PostgreSQL schema's relations.
func dbSize(b *testing.B, db **storage.DB, url string) int64 {
	ctx := context.Background()
	if (*db).Dialect() == storage.SQLite {
		(*db).Close()
		var size int64
		for _, f := range []string{url, url + "-wal"} {
			if st, err := os.Stat(f); err == nil {
				size += st.Size()
			}
		}
		*db = openBench(b, url)
		return size
	}
	var size int64
	if err := (*db).Read().QueryRowContext(ctx, `SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c
		JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = current_schema() AND c.relkind IN ('r', 'm')`).Scan(&size); err != nil {
		b.Fatal(err)
	}
	return size
}
