package rooms

import (
	"context"
	"sort"

	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/storage"
)

// Bundled aggregations (client-server API, Aggregations of child events):
// events leaving the server carry unsigned["m.relations"] with a summary of
// their m.thread, m.replace and m.reference children.

// Aggregations returns, for each event of evs that has children, its
// unsigned["m.relations"] value as formatted for viewer. Redacted events
// get none (redaction cuts an event off from its relations), nor do state
// events, so formatting room state costs no relation queries.
func (r *Rooms) Aggregations(ctx context.Context, evs []*Event, viewer Viewer) (map[string]map[string]any, error) {
	byID := make(map[string]*Event, len(evs))
	ids := make([]string, 0, len(evs))
	for _, ev := range evs {
		if ev.RedactedBy != nil || ev.IsState() || byID[ev.EventID] != nil {
			continue
		}
		byID[ev.EventID] = ev
		ids = append(ids, ev.EventID)
	}
	out := map[string]map[string]any{}
	if len(ids) == 0 {
		return out, nil
	}
	add := func(id, rel string, v any) {
		if out[id] == nil {
			out[id] = map[string]any{}
		}
		out[id][rel] = v
	}
	threads, err := storage.ThreadSummaries(ctx, r.db.Read(), ids, viewer.UserID)
	if err != nil {
		return nil, err
	}
	if len(threads) > 0 {
		positions := make([]int64, 0, len(threads))
		for _, t := range threads {
			positions = append(positions, t.LatestPos)
		}
		rows, err := storage.EventsAtPositions(ctx, r.db.Read(), positions)
		if err != nil {
			return nil, err
		}
		latest, err := r.fromRows(ctx, rows)
		if err != nil {
			return nil, err
		}
		for _, l := range latest {
			if l.RelatesTo == nil {
				continue
			}
			root := *l.RelatesTo
			t := threads[root]
			add(root, "m.thread", map[string]any{
				"latest_event":              l.ClientEvent(viewer, nil),
				"count":                     t.Count,
				"current_user_participated": t.Participated || byID[root].Sender == viewer.UserID,
			})
		}
	}
	rows, err := storage.EditsAndReferences(ctx, r.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	children, err := r.fromRows(ctx, rows)
	if err != nil {
		return nil, err
	}
	edits := map[string]*Event{}
	refs := map[string][]map[string]string{}
	for _, c := range children {
		parent := byID[*c.RelatesTo]
		if parent == nil || parent.RoomID != c.RoomID {
			continue
		}
		switch *c.RelType {
		case "m.reference":
			refs[parent.EventID] = append(refs[parent.EventID], map[string]string{"event_id": c.EventID})
		case "m.replace":
			if !ValidEdit(parent, c) {
				continue
			}
			if cur := edits[parent.EventID]; cur == nil || c.OriginTS > cur.OriginTS || c.OriginTS == cur.OriginTS && c.EventID > cur.EventID {
				edits[parent.EventID] = c
			}
		}
	}
	for id, e := range edits {
		add(id, "m.replace", e.ClientEvent(viewer, nil))
	}
	for id, rs := range refs {
		sort.Slice(rs, func(i, j int) bool { return rs[i]["event_id"] < rs[j]["event_id"] })
		add(id, "m.reference", map[string]any{"chunk": rs})
	}
	return out, nil
}

// ValidEdit applies the spec's validity rules for an m.replace event
// (client-server API, Event replacements, Validity of replacement events):
// same room, sender and type as the original, neither a state event, the
// original not itself an edit, and (unless encrypted) m.new_content present.
func ValidEdit(original, edit *Event) bool {
	if original.RoomID != edit.RoomID || original.Sender != edit.Sender || original.Type != edit.Type {
		return false
	}
	if original.StateKey != nil || edit.StateKey != nil {
		return false
	}
	if original.RelType != nil && *original.RelType == "m.replace" {
		return false
	}
	if edit.Type != "m.room.encrypted" && !gjson.GetBytes(edit.PDU.Content(), `m\.new_content`).IsObject() {
		return false
	}
	return true
}

// Children pages through the events relating to the parents (storage's
// RelationsQuery), through the event cache.
func (r *Rooms) Children(ctx context.Context, q storage.RelationsQuery) ([]*Event, error) {
	rows, err := storage.Relations(ctx, r.db.Read(), q)
	if err != nil {
		return nil, err
	}
	return r.fromRows(ctx, rows)
}

// Descendants returns the IDs of parent's relations down to maxDepth
// levels (1: direct children only), and the depth actually reached.
func (r *Rooms) Descendants(ctx context.Context, roomID, parent string, maxDepth int) ([]string, int, error) {
	seen := map[string]bool{parent: true}
	level := []string{parent}
	var all []string
	depth := 0
	for depth < maxDepth && len(level) > 0 {
		ids, err := storage.ChildIDs(ctx, r.db.Read(), roomID, level)
		if err != nil {
			return nil, 0, err
		}
		var next []string
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				next = append(next, id)
			}
		}
		if len(next) == 0 {
			break
		}
		depth++
		all = append(all, next...)
		level = next
	}
	return all, depth, nil
}
