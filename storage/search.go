package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"unicode"

	"github.com/jackc/pgx/v5"
	"github.com/tidwall/gjson"
	"golang.org/x/text/unicode/norm"
)

// Full-text search (client-server API, Server Side Search). The index,
// event_search, holds one row per timeline event with a searchable key:
// SQLite FTS5 keyed by rowid = stream_pos, PostgreSQL a tsvector with a GIN
// index. The room core keeps it current in the transaction that persists
// an event (IndexForSearch) or applies a redaction (UnindexForSearch).
//
// Text and query are split into words the same way: runs of letters and
// numbers, lower-cased (FTS5's unicode61 tokenizer does this itself; for
// PostgreSQL the words are joined with spaces before to_tsvector). A
// search term becomes, per whitespace-separated piece, a phrase of its
// words whose last word matches as a prefix, all pieces required; so
// nothing a user types is query syntax.

// SearchKeyTypes maps the spec's search keys to the event type each
// belongs to.
var SearchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

var searchKeyOfType = map[string]string{
	"m.room.message": "body",
	"m.room.name":    "name",
	"m.room.topic":   "topic",
}

// SearchWords splits text into lower-case words: runs of letters and
// numbers.
func SearchWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
}

// SearchPhrases splits a search term into phrases: the words of each
// whitespace-separated piece ("a_b" is the phrase "a b").
func SearchPhrases(term string) [][]string {
	var out [][]string
	for _, piece := range strings.Fields(term) {
		if ws := SearchWords(piece); len(ws) > 0 {
			out = append(out, ws)
		}
	}
	return out
}

// SearchText returns the searchable text of an event's JSON, if any.
func SearchText(typ string, eventJSON []byte) (string, bool) {
	key, ok := searchKeyOfType[typ]
	if !ok {
		return "", false
	}
	v := gjson.GetBytes(eventJSON, "content."+key)
	if v.Type != gjson.String {
		return "", false
	}
	return v.Str, true
}

// searchFold is a word as the index holds it: FTS5's unicode61 tokenizer
// removes diacritics from Latin letters, so "café" is the term "cafe".
func searchFold(w string) string {
	d := norm.NFD.String(w)
	if d == w && isASCII(w) {
		return w
	}
	return strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Mn, r) {
			return -1
		}
		return r
	}, d)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// IndexForSearch adds a just-inserted event (e.StreamPos set) to the
// search index when it is a timeline event with a searchable key.
func (db *DB) IndexForSearch(ctx context.Context, tx *sql.Tx, e Event) error {
	if e.Outlier || e.Rejected || e.SoftFailed || e.RedactedBy != nil {
		return nil
	}
	text, ok := SearchText(e.Type, e.JSON)
	if !ok {
		return nil
	}
	words := SearchWords(text)
	var err error
	if db.dialect == Postgres {
		_, err = tx.ExecContext(ctx, `INSERT INTO event_search (stream_pos, vector, room_id, type, sender) VALUES ($1, to_tsvector('simple', $2), $3, $4, $5)`,
			e.StreamPos, strings.Join(words, " "), e.RoomID, e.Type, e.Sender)
	} else {
		if _, err = tx.ExecContext(ctx, `INSERT INTO event_search (rowid, value) VALUES ($1, $2)`, e.StreamPos, text); err != nil {
			return fmt.Errorf("indexing event for search: %w", err)
		}
		if _, err = tx.ExecContext(ctx, `INSERT INTO event_search_docs (stream_pos, room_id, type, sender) VALUES ($1, $2, $3, $4)`,
			e.StreamPos, e.RoomID, e.Type, e.Sender); err != nil {
			return fmt.Errorf("indexing event for search: %w", err)
		}
		seen := make(map[string]bool, len(words))
		folded := make([]string, 0, len(words))
		for _, w := range words {
			if w = searchFold(w); !seen[w] {
				seen[w] = true
				folded = append(folded, w)
			}
		}
		js, _ := json.Marshal(folded)
		_, err = tx.ExecContext(ctx, `INSERT OR IGNORE INTO event_search_words (word) SELECT value FROM json_each($1)`, string(js))
	}
	if err != nil {
		return fmt.Errorf("indexing event for search: %w", err)
	}
	return nil
}

// UnindexForSearch removes a redacted event from the search index. (On
// SQLite its words stay in event_search_words, unattached to any event:
// they only widen a prefix's expansion.)
func (db *DB) UnindexForSearch(ctx context.Context, tx *sql.Tx, eventID string) error {
	stmts := []string{`DELETE FROM event_search WHERE stream_pos = (SELECT stream_pos FROM events WHERE event_id = $1)`}
	if db.dialect == SQLite {
		stmts = []string{`DELETE FROM event_search WHERE rowid = (SELECT stream_pos FROM events WHERE event_id = $1)`,
			`DELETE FROM event_search_docs WHERE stream_pos = (SELECT stream_pos FROM events WHERE event_id = $1)`}
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q, eventID); err != nil {
			return fmt.Errorf("removing event from search: %w", err)
		}
	}
	return nil
}

const (
	// SearchRankWindow is how many matches order_by rank ranks: the
	// newest this many in the rooms searched. Scoring a match costs a few
	// microseconds, so ranking every match of a word in most messages of
	// a large server would take seconds; older matches are not results.
	SearchRankWindow = 1000
	// SearchCountExact is how many matches SearchCount counts; beyond it
	// the count is an estimate. It equals SearchRankWindow so that the
	// first page by rank counts from the window it ranks.
	SearchCountExact = SearchRankWindow
	// maxPrefixWords bounds the words a search word's prefix expands to
	// on SQLite; a shorter prefix is an FTS5 prefix query.
	maxPrefixWords = 128
	// BM25's parameters, and the document length it normalises against
	// (a constant, so that a score does not move between pages).
	bm25K1, bm25B, bm25AvgLen = 1.2, 0.75, 12.0
)

// SearchQuery is one search: phrases (from SearchPhrases) in events of
// the given rooms and types, optionally of the given senders only, best
// ranked or newest first, after a cursor.
type SearchQuery struct {
	Phrases    [][]string
	RoomIDs    []string
	Types      []string
	Senders    []string
	NotSenders []string
	ByRank     bool
	After      *SearchCursor
	Limit      int
}

// SearchCursor is a position in a search's order: the last result seen.
// Rank, Floor and Ceiling are used only when ordering by rank: the
// stream positions that bound the matches ranked (Floor 0 when the first
// page ranked every match), so that later pages rank the same set.
type SearchCursor struct {
	Rank           float64
	StreamPos      int64
	Floor, Ceiling int64
}

// SearchHit is a matching event and its rank (higher is better); Floor
// and Ceiling are its search's bounds (see SearchCursor).
type SearchHit struct {
	Event
	Rank           float64
	Floor, Ceiling int64
}

var qualifiedEventColumns = func() string {
	cols := strings.Split(eventColumns, ",")
	for i, c := range cols {
		cols[i] = "e." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}()

// SearchScore is the rank of a text for the phrases: BM25 over the
// text's words with each phrase's count in it (at least 1: the index
// matched it, perhaps through diacritics the words keep), every phrase
// weighing the same (each result holds every phrase, so inverse document
// frequency would only weigh phrases against each other) and a constant
// average length.
func SearchScore(phrases [][]string, text string) float64 {
	words := SearchWords(text)
	norm := bm25K1 * (1 - bm25B + bm25B*float64(len(words))/bm25AvgLen)
	var score float64
	for _, p := range phrases {
		tf := 0.0
		for i := 0; i+len(p) <= len(words); i++ {
			j := 0
			for ; j < len(p)-1 && words[i+j] == p[j]; j++ {
			}
			if j == len(p)-1 && strings.HasPrefix(words[i+j], p[j]) {
				tf++
			}
		}
		tf = max(tf, 1)
		score += tf * (bm25K1 + 1) / (tf + norm)
	}
	return score
}

// matchExpr is the dialect's query for the phrases: an FTS5 query of
// quoted phrases, the last word of each expanded to the indexed words it
// begins, or a tsquery of quoted lexemes (words hold only letters and
// numbers, so neither can hold syntax).
func (db *DB) matchExpr(ctx context.Context, r Reader, phrases [][]string) (string, error) {
	quote := func(ws []string) string { return `"` + strings.ReplaceAll(strings.Join(ws, " "), `"`, `""`) + `"` }
	parts := make([]string, len(phrases))
	for i, ws := range phrases {
		if db.dialect == Postgres {
			qs := make([]string, len(ws))
			for j, w := range ws {
				qs[j] = "'" + strings.ReplaceAll(w, "'", "''") + "'"
			}
			parts[i] = strings.Join(qs, " <-> ") + ":*"
			continue
		}
		last := searchFold(ws[len(ws)-1])
		words, err := queryColumn[string](ctx, r, "expanding a search prefix",
			`SELECT word FROM event_search_words WHERE word >= $1 ORDER BY word LIMIT $2`, last, maxPrefixWords+1)
		if err != nil {
			return "", err
		}
		var terms []string
		for _, w := range words {
			if strings.HasPrefix(w, last) {
				terms = append(terms, quote(append(ws[:len(ws)-1:len(ws)-1], w)))
			}
		}
		switch {
		case len(terms) > maxPrefixWords:
			parts[i] = quote(ws) + "*"
		case len(terms) == 0:
			parts[i] = quote(ws) // no indexed word begins so: no match
		default:
			parts[i] = "(" + strings.Join(terms, " OR ") + ")"
		}
	}
	if db.dialect == Postgres {
		return strings.Join(parts, " & "), nil
	}
	return strings.Join(parts, " AND "), nil
}

// searchBounds limits matches to stream positions below Below (if not 0)
// and between Floor and Ceiling (if Ceiling is not 0).
type searchBounds struct{ Below, Floor, Ceiling int64 }

// searchMatches is a query for the stream positions (column pos) of q's
// matches within the bounds, newest first, at most limit of them.
func (db *DB) searchMatches(ctx context.Context, r Reader, q SearchQuery, bounds searchBounds, limit int) (query string, args []any, err error) {
	match, err := db.matchExpr(ctx, r, q.Phrases)
	if err != nil {
		return "", nil, err
	}
	add := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// A list (a user may be in thousands of rooms) is one parameter, so
	// the statement's text does not grow with it: a JSON array on SQLite,
	// a text[] on PostgreSQL, whose planner then sees the values (and
	// hashes them) and can walk the index newest first when most rows
	// match.
	in := func(col string, vs []string, not bool) string {
		if db.dialect == Postgres {
			if not {
				return col + ` <> ALL(` + add(vs) + `::text[])`
			}
			return col + ` = ANY(` + add(vs) + `::text[])`
		}
		js, _ := json.Marshal(vs)
		op := ` IN `
		if not {
			op = ` NOT IN `
		}
		return col + op + `(SELECT value FROM json_each(` + add(string(js)) + `))`
	}
	// The filters read the index's own columns (PostgreSQL) or its side
	// table (SQLite), never events.
	var b strings.Builder
	pos, d := "s.stream_pos", "s"
	if db.dialect == Postgres {
		b.WriteString(`SELECT s.stream_pos AS pos FROM event_search s WHERE s.vector @@ to_tsquery('simple', ` + add(match) + `)`)
	} else {
		pos, d = "event_search.rowid", "d"
		b.WriteString(`SELECT event_search.rowid AS pos FROM event_search JOIN event_search_docs d ON d.stream_pos = event_search.rowid
			WHERE event_search MATCH ` + add(match))
	}
	b.WriteString(` AND ` + in(d+`.room_id`, q.RoomIDs, false) + ` AND ` + in(d+`.type`, q.Types, false))
	if len(q.Senders) > 0 {
		b.WriteString(` AND ` + in(d+`.sender`, q.Senders, false))
	}
	if len(q.NotSenders) > 0 {
		b.WriteString(` AND ` + in(d+`.sender`, q.NotSenders, true))
	}
	if bounds.Below != 0 {
		b.WriteString(` AND ` + pos + ` < ` + add(bounds.Below))
	}
	if bounds.Ceiling != 0 {
		b.WriteString(` AND ` + pos + ` BETWEEN ` + add(bounds.Floor) + ` AND ` + add(bounds.Ceiling))
	}
	b.WriteString(` ORDER BY ` + pos + ` DESC LIMIT ` + add(limit))
	return b.String(), args, nil
}

// customPlan marks a search's arguments for PostgreSQL to plan the query
// with their values each time: pgx otherwise prepares it, and after a few
// runs PostgreSQL may keep a generic plan, blind to how common the words
// are and how many rooms are listed (which decide between the GIN index
// and walking the table newest first).
func (db *DB) customPlan(args []any) []any {
	if db.dialect == Postgres {
		return append([]any{pgx.QueryExecModeExec}, args...)
	}
	return args
}

// Search returns up to q.Limit hits after q.After in q's order: by rank
// (ties newest first) among the newest SearchRankWindow matches, or
// newest first. The first page by rank also returns SearchCount's count,
// from the window it ranked (the same matches SearchCount would walk
// again); otherwise the count is -1.
func (db *DB) Search(ctx context.Context, r Reader, q SearchQuery) ([]SearchHit, int, error) {
	if len(q.Phrases) == 0 || len(q.RoomIDs) == 0 || len(q.Types) == 0 {
		return nil, 0, nil
	}
	var bounds searchBounds
	limit := q.Limit
	if q.ByRank {
		limit = SearchRankWindow
		if q.After != nil {
			bounds.Floor, bounds.Ceiling = q.After.Floor, q.After.Ceiling
			if bounds.Ceiling == 0 {
				return nil, -1, nil // the first page had no matches
			}
		}
	} else if q.After != nil {
		bounds.Below = q.After.StreamPos
	}
	matches, args, err := db.searchMatches(ctx, r, q, bounds, limit)
	if err != nil {
		return nil, -1, err
	}
	if !q.ByRank {
		hits, err := db.searchEvents(ctx, r, q, `SELECT pos FROM (`+matches+`) w`, db.customPlan(args))
		return hits, -1, err
	}
	// Score the window's matches from their text, and read the events of
	// the page only.
	type scored struct {
		pos  int64
		rank float64
	}
	window, err := queryList(ctx, r, "searching", `SELECT w.pos, e.type, e.json FROM (`+matches+`) w JOIN events e ON e.stream_pos = w.pos`,
		func(rows *sql.Rows, sc *scored) error {
			var typ, js string
			if err := rows.Scan(&sc.pos, &typ, &js); err != nil {
				return err
			}
			text, _ := SearchText(typ, []byte(js))
			sc.rank = SearchScore(q.Phrases, text)
			return nil
		}, db.customPlan(args)...)
	if err != nil {
		return nil, -1, err
	}
	count := -1
	if q.After == nil {
		count = len(window)
		if len(window) > 0 {
			newest, oldest := window[0].pos, window[0].pos
			for _, sc := range window {
				newest, oldest = max(newest, sc.pos), min(oldest, sc.pos)
			}
			if count, err = db.estimateCount(ctx, r, q, len(window), newest, oldest); err != nil {
				return nil, -1, err
			}
		}
	}
	if len(window) == 0 {
		return nil, count, nil
	}
	sort.Slice(window, func(i, j int) bool {
		return window[i].rank > window[j].rank || (window[i].rank == window[j].rank && window[i].pos > window[j].pos)
	})
	floor, ceiling := bounds.Floor, bounds.Ceiling
	if q.After == nil {
		floor, ceiling = 0, window[0].pos
		for _, sc := range window {
			ceiling = max(ceiling, sc.pos)
		}
		if len(window) == SearchRankWindow {
			floor = ceiling
			for _, sc := range window {
				floor = min(floor, sc.pos)
			}
		}
	}
	var page []scored
	for _, sc := range window {
		if a := q.After; a != nil && !(sc.rank < a.Rank || (sc.rank == a.Rank && sc.pos < a.StreamPos)) {
			continue
		}
		if page = append(page, sc); len(page) == q.Limit {
			break
		}
	}
	ps := make([]int64, len(page))
	for i, sc := range page {
		ps[i] = sc.pos
	}
	js, _ := json.Marshal(ps)
	list := `SELECT value FROM json_each($1)`
	if db.dialect == Postgres {
		list = `SELECT jsonb_array_elements_text($1::jsonb)::bigint`
	}
	evs, err := db.searchEvents(ctx, r, q, list, []any{string(js)})
	if err != nil {
		return nil, -1, err
	}
	byPos := make(map[int64]SearchHit, len(evs))
	for _, h := range evs {
		byPos[h.StreamPos] = h
	}
	out := make([]SearchHit, 0, len(page))
	for _, sc := range page {
		if h, ok := byPos[sc.pos]; ok {
			h.Rank, h.Floor, h.Ceiling = sc.rank, floor, ceiling
			out = append(out, h)
		}
	}
	return out, count, nil
}

// searchEvents reads the events at the stream positions the query
// returns, newest first, with their score for q's phrases.
func (db *DB) searchEvents(ctx context.Context, r Reader, q SearchQuery, positions string, args []any) ([]SearchHit, error) {
	return queryList(ctx, r, "searching", `SELECT `+qualifiedEventColumns+` FROM events e WHERE e.stream_pos IN (`+positions+`) ORDER BY e.stream_pos DESC`,
		func(rows *sql.Rows, h *SearchHit) error {
			var js string
			e := &h.Event
			if err := rows.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.Depth, &e.OriginTS, &e.Membership,
				&e.SnapshotBefore, &e.SnapshotAfter, &e.Rejected, &e.SoftFailed, &e.Outlier, &e.RedactedBy, &e.RelatesTo, &e.RelType,
				&e.PrevContent, &e.PrevSender, &e.ReplacesState, &e.SenderDevice, &e.TxnID, &js); err != nil {
				return err
			}
			e.JSON = []byte(js)
			text, _ := SearchText(e.Type, e.JSON)
			h.Rank = SearchScore(q.Phrases, text)
			return nil
		}, args...)
}

// SearchCount is the spec's approximate count of q's matches (cursor and
// limit aside, before history visibility): exact up to SearchCountExact,
// beyond it estimated from how densely the newest SearchCountExact
// matches lie in the stream, over the stream since the first event of
// the rooms searched.
func (db *DB) SearchCount(ctx context.Context, r Reader, q SearchQuery) (int, error) {
	if len(q.Phrases) == 0 || len(q.RoomIDs) == 0 || len(q.Types) == 0 {
		return 0, nil
	}
	matches, args, err := db.searchMatches(ctx, r, q, searchBounds{}, SearchCountExact)
	if err != nil {
		return 0, err
	}
	var n int
	var newest, oldest sql.NullInt64
	if err := r.QueryRowContext(ctx, `SELECT COUNT(*), MAX(pos), MIN(pos) FROM (`+matches+`) m`,
		db.customPlan(args)...).Scan(&n, &newest, &oldest); err != nil {
		return 0, fmt.Errorf("counting search hits: %w", err)
	}
	return db.estimateCount(ctx, r, q, n, newest.Int64, oldest.Int64)
}

// estimateCount is SearchCount's answer from the newest n matches (at
// most SearchCountExact), which lie between stream positions oldest and
// newest: n itself below SearchCountExact, else n scaled by how much
// longer the stream is since the first event of the rooms searched.
func (db *DB) estimateCount(ctx context.Context, r Reader, q SearchQuery, n int, newest, oldest int64) (int, error) {
	if n < SearchCountExact {
		return n, nil
	}
	js, _ := json.Marshal(q.RoomIDs)
	rooms := `SELECT value FROM json_each($1)`
	if db.dialect == Postgres {
		rooms = `SELECT jsonb_array_elements_text($1::jsonb) AS value`
	}
	var first sql.NullInt64
	if err := r.QueryRowContext(ctx, `SELECT MIN((SELECT e.stream_pos FROM events e WHERE e.room_id = r.value ORDER BY e.stream_pos LIMIT 1))
		FROM (`+rooms+`) r`, string(js)).Scan(&first); err != nil {
		return 0, fmt.Errorf("counting search hits: %w", err)
	}
	span, seen := float64(newest-first.Int64+1), float64(newest-oldest+1)
	if !first.Valid || span <= seen {
		return n, nil
	}
	return int(float64(n) * span / seen), nil
}
