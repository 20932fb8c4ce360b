package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// Backfill from other servers (server-server API, Backfilling and
// retrieving missing events): when /messages pages back past the start of
// our copy of a room we joined over federation, the history before it is
// asked of a server in the room, checked like any received event, and
// inserted into the timeline as history: with its depth and the state
// before it, but without touching current state or forward extremities.

// Limits on the work one backfill does.
const (
	maxBackfillEvents    = 100 // events asked for per backfill request
	maxBackfillServers   = 3   // servers tried per backfill
	maxBackfillStateGaps = 3   // state_ids look-ups per backfill
	backfillRetryAfter   = time.Minute
)

// backfillMemo remembers, per room, backward extremities that no server
// could fill, so every /messages at the start of such a room does not ask
// again.
type backfillMemo struct {
	mu     sync.Mutex
	failed map[string]time.Time // room + "|" + sorted extremities → when
}

func (m *backfillMemo) recent(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.failed[key]
	return ok && time.Since(t) < backfillRetryAfter
}

func (m *backfillMemo) fail(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failed == nil {
		m.failed = map[string]time.Time{}
	}
	for k, t := range m.failed {
		if time.Since(t) >= backfillRetryAfter {
			delete(m.failed, k)
		}
	}
	m.failed[key] = time.Now()
}

// backwardExtremities are the prev events of the room's earliest timeline
// events that are not in our timeline.
func (r *Rooms) backwardExtremities(ctx context.Context, roomID string) ([]string, error) {
	rows, err := storage.EarliestTimelineEvents(ctx, r.db.Read(), roomID, 20)
	if err != nil {
		return nil, err
	}
	earliest, err := r.fromRows(ctx, rows)
	if err != nil {
		return nil, err
	}
	return r.missingPrevs(ctx, earliest)
}

// missingPrevs are the prev events of evs that are not in our timeline
// (unknown, or held only as outliers), each once.
func (r *Rooms) missingPrevs(ctx context.Context, evs []*Event) ([]string, error) {
	var prevs []string
	for _, ev := range evs {
		for _, id := range ev.PDU.PrevEventIDs() {
			if !slices.Contains(prevs, id) {
				prevs = append(prevs, id)
			}
		}
	}
	have, err := r.known(ctx, prevs)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, id := range prevs {
		if ev, ok := have[id]; !ok || ev.Outlier {
			missing = append(missing, id)
		}
	}
	return missing, nil
}

// backfillRemote fills the history before the given missing events from a
// server in the room, at most maxBackfillEvents events, and reports whether
// any event was added.
func (r *Rooms) backfillRemote(ctx context.Context, roomID string, extremities []string, want int) (bool, error) {
	if r.members == nil || r.verifier == nil || len(extremities) == 0 {
		return false, nil
	}
	extremities = slices.Compact(slices.Sorted(slices.Values(extremities)))
	if len(extremities) > 20 {
		extremities = extremities[:20]
	}
	key := roomID + "|" + strings.Join(extremities, ",")
	if r.backfill.recent(key) {
		return false, nil
	}
	ver, err := r.Version(ctx, roomID)
	if err != nil {
		return false, err
	}
	servers, err := r.ServersInRoom(ctx, roomID)
	if err != nil {
		return false, err
	}
	tried := 0
	for _, s := range servers {
		if s == r.serverName || tried == maxBackfillServers {
			continue
		}
		tried++
		raws, err := r.members.Backfill(ctx, s, roomID, extremities, min(max(want, 20), maxBackfillEvents))
		if err != nil {
			r.log.Info("backfill failed", "room", roomID, "from", s, "err", err)
			continue
		}
		added, err := r.ingestHistory(ctx, s, ver, r.parseHistory(ctx, s, ver, roomID, raws))
		if err != nil {
			return false, err
		}
		if added > 0 {
			return true, nil
		}
	}
	r.backfill.fail(key)
	return false, nil
}

// parseHistory parses and signature-checks a backfill answer, dropping bad
// events and events of other rooms.
func (r *Rooms) parseHistory(ctx context.Context, from spec.ServerName, ver gomatrixserverlib.IRoomVersion, roomID string, raws []json.RawMessage) []gomatrixserverlib.PDU {
	var pdus []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, raw := range raws[:min(len(raws), maxBackfillEvents)] {
		p, err := r.parseRemote(ctx, ver, raw)
		if err != nil || p.RoomID().String() != roomID || seen[p.EventID()] {
			r.log.Debug("dropping a backfilled event", "room", roomID, "from", from, "err", err)
			continue
		}
		seen[p.EventID()] = true
		pdus = append(pdus, p)
	}
	return pdus
}

// FetchHistoricalEvent brings an event another server named (its
// timestamp_to_event answer) and a few before it into our timeline as
// history, so /context and /messages can start from it.
func (r *Rooms) FetchHistoricalEvent(ctx context.Context, server spec.ServerName, roomID, eventID string) (*Event, error) {
	if ev, err := r.Event(ctx, eventID); err == nil && !ev.Outlier {
		if ev.RoomID != roomID {
			return nil, errors.New("the event is in another room")
		}
		return ev, nil
	}
	if r.members == nil || r.verifier == nil {
		return nil, errors.New("federation is not available")
	}
	ver, err := r.Version(ctx, roomID)
	if err != nil {
		return nil, err
	}
	raws, err := r.members.Backfill(ctx, server, roomID, []string{eventID}, 10)
	if err != nil {
		return nil, err
	}
	if _, err := r.ingestHistory(ctx, server, ver, r.parseHistory(ctx, server, ver, roomID, raws)); err != nil {
		return nil, err
	}
	ev, err := r.Event(ctx, eventID)
	if err != nil || ev.Outlier || ev.RoomID != roomID {
		return nil, fmt.Errorf("%s did not give event %s of room %s", server, eventID, roomID)
	}
	return ev, nil
}

// ingestHistory checks and stores backfilled events, oldest first, and
// returns how many were added to the timeline.
func (r *Rooms) ingestHistory(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.IRoomVersion, pdus []gomatrixserverlib.PDU) (int, error) {
	sort.SliceStable(pdus, func(i, j int) bool { return pdus[i].Depth() < pdus[j].Depth() })
	budget := maxFetchedEvents
	gaps := 0
	added := 0
	for _, pdu := range pdus {
		have, err := r.known(ctx, []string{pdu.EventID()})
		if err != nil {
			return added, err
		}
		if ev, ok := have[pdu.EventID()]; ok && !ev.Outlier {
			continue
		}
		if err := r.fetchAuthEvents(ctx, origin, ver, pdu, &budget); err != nil {
			r.log.Debug("backfilled event without its auth events", "event", pdu.EventID(), "err", err)
			continue
		}
		prevs, err := r.known(ctx, pdu.PrevEventIDs())
		if err != nil {
			return added, err
		}
		complete := true
		for _, id := range pdu.PrevEventIDs() {
			if p, ok := prevs[id]; !ok || p.Outlier {
				complete = false
			}
		}
		var stateBefore State
		if !complete {
			if gaps == maxBackfillStateGaps {
				continue
			}
			gaps++
			inDAG := map[string]*Event{}
			for id, p := range prevs {
				if !p.Outlier {
					inDAG[id] = p
				}
			}
			if stateBefore, err = r.fetchStateBefore(ctx, origin, ver, pdu, inDAG, &budget); err != nil {
				r.log.Info("backfill: no state before an event", "event", pdu.EventID(), "err", err)
				continue
			}
			prevs = nil
		}
		if _, err := r.persist(ctx, incoming{arrival: arriveBackfill, pdu: pdu, prevs: prevs, stateBefore: stateBefore}); err != nil {
			return added, fmt.Errorf("storing backfilled event %s: %w", pdu.EventID(), err)
		}
		added++
	}
	return added, nil
}
