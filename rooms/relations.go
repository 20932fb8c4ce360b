package rooms

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/storage"
)

// Bundled aggregations (client-server API, Aggregations of child events):
// events leaving the server carry unsigned["m.relations"] with a summary of
// their m.thread, m.replace and m.reference children.

// aggregations returns, for each event of evs that has children, its
// unsigned["m.relations"] value as formatted for viewer. Redacted events
// get none (redaction cuts an event off from its relations), nor do state
// events, so formatting room state costs no relation queries. With pos > 0
// (a sync's events position) the bundles are of the children up to pos,
// and come from and go to the bundle cache (see cache.go).
func (r *Rooms) aggregations(ctx context.Context, evs []*Event, viewer Viewer, pos int64) (map[string]map[string]any, error) {
	byID := make(map[string]*Event, len(evs))
	for _, ev := range evs {
		if ev.RedactedBy != nil || ev.IsState() || byID[ev.EventID] != nil {
			continue
		}
		byID[ev.EventID] = ev
	}
	out := map[string]map[string]any{}
	if len(byID) == 0 {
		return out, nil
	}
	bundles := make(map[string]*bundle, len(byID))
	var missing []*Event
	gen := r.sharedGen.Load()
	for id, ev := range byID {
		if b, ok := r.cachedBundle(id, pos, gen); ok {
			bundles[id] = b
		} else {
			missing = append(missing, ev)
		}
	}
	if len(missing) > 0 {
		read, err := r.sharedReadBundles(ctx, missing, pos, gen)
		if err != nil {
			return nil, err
		}
		for _, ev := range missing {
			bundles[ev.EventID] = read[ev.EventID]
		}
	}
	for id, b := range bundles {
		if b != nil {
			out[id] = b.render(byID[id], viewer)
		}
	}
	return out, nil
}

// bundle is what an event's bundled aggregations are made of, the same for
// every viewer; render makes the viewer's unsigned["m.relations"] of it.
// Read-only once made: many syncs share one.
type bundle struct {
	thread *storage.ThreadSummary
	latest *Event // the thread's latest event
	edit   *Event // the replacement that applies
	refs   []string
}

// render formats b for viewer. What differs per viewer is computed here:
// whether they took part in the thread, and the bundled events' unsigned
// (age, and transaction_id for the device that sent them).
func (b *bundle) render(parent *Event, viewer Viewer) map[string]any {
	out := map[string]any{}
	if b.latest != nil {
		out["m.thread"] = map[string]any{
			"latest_event":              b.latest.ClientEvent(viewer, nil),
			"count":                     b.thread.Count,
			"current_user_participated": b.thread.Senders[viewer.UserID] || parent.Sender == viewer.UserID,
		}
	}
	if b.edit != nil {
		out["m.replace"] = b.edit.ClientEvent(viewer, nil)
	}
	if len(b.refs) > 0 {
		chunk := make([]map[string]string, len(b.refs))
		for i, id := range b.refs {
			chunk[i] = map[string]string{"event_id": id}
		}
		out["m.reference"] = map[string]any{"chunk": chunk}
	}
	return out
}

// sharedReadBundles reads the bundles of parents for a sync at pos and
// caches them; the syncs missing the same ones at once (a room's members
// woken together) wait for one reading. pos 0: read, not shared.
func (r *Rooms) sharedReadBundles(ctx context.Context, parents []*Event, pos int64, gen uint64) (map[string]*bundle, error) {
	if pos <= 0 || r.bundles == nil {
		return r.readBundles(ctx, parents, 0)
	}
	ids := make([]string, len(parents))
	for i, ev := range parents {
		ids[i] = ev.EventID
	}
	slices.Sort(ids)
	key := fmt.Sprintf("bundles\x00%d\x00%d\x00%s", pos, gen, strings.Join(ids, "\x00"))
	v, err, _ := r.flights.Do(key, func() (any, error) {
		// Not the first caller's context: the others wait on this read.
		read, err := r.readBundles(context.WithoutCancel(ctx), parents, pos)
		if err != nil {
			return nil, err
		}
		for _, ev := range parents {
			r.bundles.put(bundleKey{ev.EventID, pos}, bundleEntry{gen, read[ev.EventID]})
		}
		return read, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(map[string]*bundle), nil // read-only: shared by the waiters
}

// readBundles reads the bundles of parents (distinct, neither redacted nor
// state) from the store, of the children up to position upTo (0: all); an
// event without children has none (nil).
func (r *Rooms) readBundles(ctx context.Context, parents []*Event, upTo int64) (map[string]*bundle, error) {
	byID := make(map[string]*Event, len(parents))
	ids := make([]string, 0, len(parents))
	for _, ev := range parents {
		byID[ev.EventID] = ev
		ids = append(ids, ev.EventID)
	}
	out := map[string]*bundle{}
	get := func(id string) *bundle {
		if out[id] == nil {
			out[id] = &bundle{}
		}
		return out[id]
	}
	threads, err := storage.ThreadSummaries(ctx, r.db.Read(), ids, upTo)
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
			t, ok := threads[*l.RelatesTo]
			if !ok {
				continue
			}
			b := get(*l.RelatesTo)
			b.thread, b.latest = &t, l
		}
	}
	rows, err := storage.EditsAndReferences(ctx, r.db.Read(), ids, upTo)
	if err != nil {
		return nil, err
	}
	children, err := r.fromRows(ctx, rows)
	if err != nil {
		return nil, err
	}
	for _, c := range children {
		parent := byID[*c.RelatesTo]
		if parent == nil || parent.RoomID != c.RoomID {
			continue
		}
		switch *c.RelType {
		case "m.reference":
			b := get(parent.EventID)
			b.refs = append(b.refs, c.EventID)
		case "m.replace":
			if !ValidEdit(parent, c) {
				continue
			}
			b := get(parent.EventID)
			if cur := b.edit; cur == nil || c.OriginTS > cur.OriginTS || c.OriginTS == cur.OriginTS && c.EventID > cur.EventID {
				b.edit = c
			}
		}
	}
	for _, b := range out {
		sort.Strings(b.refs)
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
