package rooms

import (
	"context"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// Visible returns the events of evs (all from one room) that userID may see,
// in order, by the spec's history visibility rules (client-server API,
// History visibility, Server behaviour):
//
//   - world_readable at the event: visible to anyone;
//   - the user's membership at the event was join: visible;
//   - shared at the event and the user is joined now: visible;
//   - invited at the event, and the user's membership then was invite: visible.
//
// "At the event" is the state after it, so users see their own join and the
// change that made history visible to them.
func (r *Rooms) Visible(ctx context.Context, userID string, evs []*Event) ([]*Event, error) {
	if len(evs) == 0 {
		return evs, nil
	}
	// The current membership matters only for shared history the user
	// was not joined at: read it then, once.
	var current string
	currentRead := false
	var err error
	type verdict struct {
		visibility gomatrixserverlib.HistoryVisibility
		membership string
	}
	bySnapshot := map[int64]verdict{}
	out := make([]*Event, 0, len(evs))
	for _, ev := range evs {
		v, ok := bySnapshot[ev.SnapshotAfter]
		if !ok {
			if v, err = r.visibilityAt(ctx, ev.SnapshotAfter, userID); err != nil {
				return nil, err
			}
			bySnapshot[ev.SnapshotAfter] = v
		}
		if !currentRead && v.visibility == gomatrixserverlib.HistoryVisibilityShared && v.membership != spec.Join {
			if current, _, err = r.MembershipOf(ctx, evs[0].RoomID, userID); err != nil {
				return nil, err
			}
			currentRead = true
		}
		allowed := false
		switch {
		case ev.Type == spec.MRoomMember && ev.StateKey != nil && *ev.StateKey == userID:
			allowed = true // users always see their own membership changes
		case v.visibility == gomatrixserverlib.HistoryVisibilityWorldReadable:
			allowed = true
		case v.membership == spec.Join:
			allowed = true
		case v.visibility == gomatrixserverlib.HistoryVisibilityShared && current == spec.Join:
			allowed = true
		case v.visibility == gomatrixserverlib.HistoryVisibilityInvited && v.membership == spec.Invite:
			allowed = true
		}
		if allowed {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (r *Rooms) visibilityAt(ctx context.Context, snapshotID int64, userID string) (v struct {
	visibility gomatrixserverlib.HistoryVisibility
	membership string
}, err error) {
	hvKey, memKey := storage.StateKey{Type: spec.MRoomHistoryVisibility}, storage.StateKey{Type: spec.MRoomMember, StateKey: userID}
	// Two entries are needed: a snapshot not cached is not loaded whole
	// (a first sync of a room with 1,000 joins looks at 1,000 snapshots).
	var state map[storage.StateKey]string
	if s, ok := r.snapshots.get(snapshotID); ok {
		state = s.state
	} else if state, err = storage.SnapshotEntries(ctx, r.db.Read(), snapshotID, hvKey, memKey); err != nil {
		return v, err
	}
	v.visibility = gomatrixserverlib.HistoryVisibilityShared // the default when unset
	ids := []string{}
	hvID, hasHV := state[hvKey]
	memID, hasMem := state[memKey]
	if hasHV {
		ids = append(ids, hvID)
	}
	if hasMem {
		ids = append(ids, memID)
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return v, err
	}
	if ev, ok := evs[hvID]; hasHV && ok {
		if hv, err := ev.PDU.HistoryVisibility(); err == nil {
			v.visibility = hv
		}
	}
	if ev, ok := evs[memID]; hasMem && ok {
		v.membership, _ = ev.PDU.Membership()
	}
	return v, nil
}

// Format turns events into client events for viewer, attaching
// unsigned.redacted_because to redacted ones and the bundled aggregations
// (unsigned["m.relations"]) of events with children.
func (r *Rooms) Format(ctx context.Context, evs []*Event, viewer Viewer) ([]ClientEvent, error) {
	return r.format(ctx, evs, viewer, 0)
}

// FormatAt is Format for a sync at events position pos (every event up to
// it committed): the bundled aggregations, of the children up to pos, are
// read once for all the syncs at pos and shared (cache.go); the rest is
// the viewer's own.
func (r *Rooms) FormatAt(ctx context.Context, evs []*Event, viewer Viewer, pos int64) ([]ClientEvent, error) {
	return r.format(ctx, evs, viewer, pos)
}

func (r *Rooms) format(ctx context.Context, evs []*Event, viewer Viewer, pos int64) ([]ClientEvent, error) {
	var redactionIDs []string
	for _, ev := range evs {
		if ev.RedactedBy != nil {
			redactionIDs = append(redactionIDs, *ev.RedactedBy)
		}
	}
	redactions, err := r.Events(ctx, r.db.Read(), redactionIDs)
	if err != nil {
		return nil, err
	}
	out := make([]ClientEvent, 0, len(evs))
	membershipAt := map[int64]string{}
	for _, ev := range evs {
		var because *Event
		if ev.RedactedBy != nil {
			because = redactions[*ev.RedactedBy]
		}
		ce := ev.ClientEvent(viewer, because)
		// unsigned.membership: the viewer's membership at the event (spec
		// v1.11, MSC4115), so clients can tell what they saw as a member.
		if viewer.UserID != "" {
			m, ok := membershipAt[ev.SnapshotAfter]
			if !ok {
				if v, err := r.visibilityAt(ctx, ev.SnapshotAfter, viewer.UserID); err == nil {
					m = v.membership
				}
				if m == "" {
					m = spec.Leave
				}
				membershipAt[ev.SnapshotAfter] = m
			}
			ce.Unsigned["membership"] = m
		}
		out = append(out, ce)
	}
	aggs, err := r.aggregations(ctx, evs, viewer, pos)
	if err != nil {
		return nil, err
	}
	for i, ev := range evs {
		if a, ok := aggs[ev.EventID]; ok {
			out[i].Unsigned["m.relations"] = a
		}
	}
	return out, nil
}
