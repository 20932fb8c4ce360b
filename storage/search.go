package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"unicode"

	"github.com/tidwall/gjson"
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
	var err error
	if db.dialect == Postgres {
		_, err = tx.ExecContext(ctx, `INSERT INTO event_search (stream_pos, vector) VALUES ($1, to_tsvector('simple', $2))`,
			e.StreamPos, strings.Join(SearchWords(text), " "))
	} else {
		_, err = tx.ExecContext(ctx, `INSERT INTO event_search (rowid, value) VALUES ($1, $2)`, e.StreamPos, text)
	}
	if err != nil {
		return fmt.Errorf("indexing event for search: %w", err)
	}
	return nil
}

// UnindexForSearch removes a redacted event from the search index.
func (db *DB) UnindexForSearch(ctx context.Context, tx *sql.Tx, eventID string) error {
	col := "rowid"
	if db.dialect == Postgres {
		col = "stream_pos"
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM event_search WHERE `+col+` = (SELECT stream_pos FROM events WHERE event_id = $1)`, eventID); err != nil {
		return fmt.Errorf("removing event from search: %w", err)
	}
	return nil
}

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
// Rank is compared only when ordering by rank.
type SearchCursor struct {
	Rank      float64
	StreamPos int64
}

// SearchHit is a matching event and its rank (higher is better).
type SearchHit struct {
	Event
	Rank float64
}

var qualifiedEventColumns = func() string {
	cols := strings.Split(eventColumns, ",")
	for i, c := range cols {
		cols[i] = "e." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}()

// matchExpr is the dialect's query for the phrases: an FTS5 query string
// of quoted phrases, or a tsquery of quoted lexemes (words hold only
// letters and numbers, so neither can hold syntax).
func (db *DB) matchExpr(phrases [][]string) string {
	parts := make([]string, len(phrases))
	for i, ws := range phrases {
		if db.dialect == Postgres {
			qs := make([]string, len(ws))
			for j, w := range ws {
				qs[j] = "'" + strings.ReplaceAll(w, "'", "''") + "'"
			}
			parts[i] = strings.Join(qs, " <-> ") + ":*"
		} else {
			parts[i] = `"` + strings.ReplaceAll(strings.Join(ws, " "), `"`, `""`) + `"*`
		}
	}
	if db.dialect == Postgres {
		return strings.Join(parts, " & ")
	}
	return strings.Join(parts, " ")
}

// searchFrom returns the score expression and the FROM and WHERE of a
// search, and their arguments.
func (db *DB) searchFrom(q SearchQuery) (score, from string, args []any) {
	add := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	// A list (a user may be in thousands of rooms) is one JSON array
	// parameter, so the statement's text does not grow with it.
	list := func(vs []string) string {
		js, _ := json.Marshal(vs)
		if db.dialect == Postgres {
			return `SELECT jsonb_array_elements_text(` + add(string(js)) + `::jsonb)`
		}
		return `SELECT value FROM json_each(` + add(string(js)) + `)`
	}
	var b strings.Builder
	if db.dialect == Postgres {
		score = `ts_rank(s.vector, q.q)::float8`
		b.WriteString(` FROM event_search s JOIN events e ON e.stream_pos = s.stream_pos, to_tsquery('simple', ` + add(db.matchExpr(q.Phrases)) + `) AS q(q)
			WHERE s.vector @@ q.q`)
	} else {
		score = `-bm25(event_search)`
		b.WriteString(` FROM event_search JOIN events e ON e.stream_pos = event_search.rowid
			WHERE event_search MATCH ` + add(db.matchExpr(q.Phrases)))
	}
	b.WriteString(` AND e.room_id IN (` + list(q.RoomIDs) + `) AND e.type IN (` + list(q.Types) + `) AND e.redacted_by IS NULL`)
	if len(q.Senders) > 0 {
		b.WriteString(` AND e.sender IN (` + list(q.Senders) + `)`)
	}
	if len(q.NotSenders) > 0 {
		b.WriteString(` AND e.sender NOT IN (` + list(q.NotSenders) + `)`)
	}
	return score, b.String(), args
}

// Search returns up to q.Limit hits after q.After in q's order: by rank
// (ties newest first) or newest first.
func (db *DB) Search(ctx context.Context, r Reader, q SearchQuery) ([]SearchHit, error) {
	if len(q.Phrases) == 0 || len(q.RoomIDs) == 0 || len(q.Types) == 0 {
		return nil, nil
	}
	score, from, args := db.searchFrom(q)
	add := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	var query string
	if q.ByRank {
		// Every match is scored and sorted: carry only its position and
		// score through the sort, and read the page's events after.
		where := ""
		if q.After != nil {
			r, p := add(q.After.Rank), add(q.After.StreamPos)
			where = ` WHERE score < ` + r + ` OR (score = ` + r + ` AND pos < ` + p + `)`
		}
		query = `SELECT ` + qualifiedEventColumns + `, h.score FROM (
			SELECT pos, score FROM (SELECT e.stream_pos AS pos, ` + score + ` AS score` + from + `) m` + where + `
			ORDER BY score DESC, pos DESC LIMIT ` + add(q.Limit) + `
		) h JOIN events e ON e.stream_pos = h.pos ORDER BY h.score DESC, h.pos DESC`
	} else {
		// Newest first in the index's own key order, so that the engine
		// (FTS5 in particular) stops at the page's end instead of scoring
		// and sorting every match.
		pos := "event_search.rowid"
		if db.dialect == Postgres {
			pos = "s.stream_pos"
		}
		query = `SELECT ` + qualifiedEventColumns + `, ` + score + ` AS score` + from
		if q.After != nil {
			query += ` AND ` + pos + ` < ` + add(q.After.StreamPos)
		}
		query += ` ORDER BY ` + pos + ` DESC LIMIT ` + add(q.Limit)
	}
	return queryList(ctx, r, "searching", query, func(rows *sql.Rows, h *SearchHit) error {
		var js string
		e := &h.Event
		if err := rows.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.Depth, &e.OriginTS, &e.Membership,
			&e.SnapshotBefore, &e.SnapshotAfter, &e.Rejected, &e.SoftFailed, &e.Outlier, &e.RedactedBy, &e.RelatesTo, &e.RelType,
			&e.PrevContent, &e.PrevSender, &e.ReplacesState, &e.SenderDevice, &e.TxnID, &js, &h.Rank); err != nil {
			return err
		}
		e.JSON = []byte(js)
		return nil
	}, args...)
}

// SearchCount counts q's matches (cursor and limit aside), before history
// visibility: the spec's approximate count.
func (db *DB) SearchCount(ctx context.Context, r Reader, q SearchQuery) (int, error) {
	if len(q.Phrases) == 0 || len(q.RoomIDs) == 0 || len(q.Types) == 0 {
		return 0, nil
	}
	_, from, args := db.searchFrom(q)
	var n int
	if err := r.QueryRowContext(ctx, `SELECT COUNT(*)`+from, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting search hits: %w", err)
	}
	return n, nil
}
