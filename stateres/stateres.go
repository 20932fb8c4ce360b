// Package stateres is Matrix state resolution v2 and v2.1 (room versions
// 2-12): pure functions over gomatrixserverlib PDUs, with no storage.
//
// gomatrixserverlib's own v2.1 (ResolveConflictsNew) is unfinished and
// panicked on a two-branch power-level fork, so Hearth resolves v2.1 rooms
// here. The algorithm follows the spec (rooms/v2 and rooms/v12, "State
// resolution") and, where the text leaves room for choice, Synapse, the
// implementation the other servers in a room are most likely to run:
//
//   - the sender's power level for the reverse topological power ordering
//     is read from the power levels among the event's own auth events, the
//     creator having 100 without one, and room creators (v12) above
//     everyone;
//   - the auth-event graph used for that ordering only follows edges between
//     events of the full conflicted set;
//   - an event's mainline position counts from the oldest power levels
//     event (1) upwards, 0 when its power-level chain never meets the
//     mainline.
package stateres

import (
	"container/heap"
	"fmt"
	"math"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
)

// Key is a state key tuple (event type, state key).
type Key struct{ Type, StateKey string }

// StateMap maps state keys to event IDs.
type StateMap map[Key]string

// Input is what one resolution needs.
type Input struct {
	// Algorithm is StateResV2 or StateResV2_1 (the room version's).
	Algorithm gomatrixserverlib.StateResAlgorithm
	// StateSets are the states to merge (at least one).
	StateSets []StateMap
	// Event returns an event of the state sets or of their auth chains;
	// events it does not know are treated as absent.
	Event func(eventID string) (gomatrixserverlib.PDU, bool)
	// Rejected reports events that were rejected: they are not used as
	// auth events during the iterative auth checks.
	Rejected func(eventID string) bool
	// UserIDForSender maps senders to user IDs for the auth rules.
	UserIDForSender spec.UserIDForSender
	// Allowed, when set, replaces gomatrixserverlib.Allowed in the
	// iterative auth checks (room versions whose auth rules differ from
	// the library's, such as MSC3757's).
	Allowed func(gomatrixserverlib.PDU, gomatrixserverlib.AuthEventProvider) error
}

// Resolve returns the resolution of in.StateSets.
func Resolve(in Input) (StateMap, error) {
	if in.Algorithm != gomatrixserverlib.StateResV2 && in.Algorithm != gomatrixserverlib.StateResV2_1 {
		return nil, fmt.Errorf("stateres: unsupported algorithm %v", in.Algorithm)
	}
	if len(in.StateSets) == 0 {
		return StateMap{}, nil
	}
	if in.Rejected == nil {
		in.Rejected = func(string) bool { return false }
	}
	r := &resolver{in: in, powerCache: map[string]float64{}}

	unconflicted, conflicted := split(in.StateSets)
	if len(conflicted) == 0 {
		return unconflicted, nil
	}
	full := r.fullConflictedSet(conflicted)

	var power []string
	for id := range full {
		if ev, ok := in.Event(id); ok && isPowerEvent(ev) {
			power = append(power, id)
		}
	}
	sortedPower := r.reverseTopologicalPowerSort(power, full)

	start := StateMap{}
	if in.Algorithm == gomatrixserverlib.StateResV2 {
		for k, v := range unconflicted {
			start[k] = v
		}
	}
	resolved := r.iterativeAuthChecks(sortedPower, start)

	inPower := make(map[string]bool, len(sortedPower))
	for _, id := range sortedPower {
		inPower[id] = true
	}
	var leftover []string
	for id := range full {
		if !inPower[id] {
			if _, ok := in.Event(id); ok {
				leftover = append(leftover, id)
			}
		}
	}
	leftover = r.mainlineSort(leftover, resolved[Key{spec.MRoomPowerLevels, ""}])
	resolved = r.iterativeAuthChecks(leftover, resolved)

	for k, v := range unconflicted {
		resolved[k] = v
	}
	return resolved, nil
}

type resolver struct {
	in         Input
	powerCache map[string]float64
}

// split divides the state sets into the unconflicted state map and the
// conflicted state set: a key is unconflicted when every set has it with
// the same event.
func split(sets []StateMap) (StateMap, map[string]bool) {
	unconflicted := StateMap{}
	conflicted := map[string]bool{}
	keys := map[Key]bool{}
	for _, s := range sets {
		for k := range s {
			keys[k] = true
		}
	}
	for k := range keys {
		v, same := sets[0][k]
		for _, s := range sets[1:] {
			if w, ok := s[k]; !ok || w != v {
				same = false
				break
			}
		}
		if same {
			unconflicted[k] = v
			continue
		}
		for _, s := range sets {
			if w, ok := s[k]; ok {
				conflicted[w] = true
			}
		}
	}
	return unconflicted, conflicted
}

// authEvents returns an event's auth event IDs (for v12 rooms including the
// create event, which the library adds from the room ID).
func (r *resolver) authEvents(id string) []string {
	ev, ok := r.in.Event(id)
	if !ok {
		return nil
	}
	return ev.AuthEventIDs()
}

// fullConflictedSet is the conflicted state set, the auth difference and,
// for v2.1, the conflicted state subgraph.
func (r *resolver) fullConflictedSet(conflicted map[string]bool) map[string]bool {
	full := map[string]bool{}
	for id := range conflicted {
		full[id] = true
	}
	// Auth difference: union minus intersection of the sets' auth chains.
	count := map[string]int{}
	for _, s := range r.in.StateSets {
		for id := range r.chainOf(s) {
			count[id]++
		}
	}
	for id, n := range count {
		if n < len(r.in.StateSets) {
			full[id] = true
		}
	}
	if r.in.Algorithm == gomatrixserverlib.StateResV2_1 {
		for id := range r.conflictedSubgraph(conflicted) {
			full[id] = true
		}
	}
	return full
}

// chainOf is the union of the auth chains of a state set's events.
func (r *resolver) chainOf(s StateMap) map[string]bool {
	seen := map[string]bool{}
	var stack []string
	for _, id := range s {
		stack = append(stack, r.authEvents(id)...)
	}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[id] {
			continue
		}
		seen[id] = true
		stack = append(stack, r.authEvents(id)...)
	}
	return seen
}

// conflictedSubgraph is every event on an auth_events path between two
// events of the conflicted state set, endpoints included: the events that
// are reachable from a conflicted event and from which a conflicted event
// is reachable.
func (r *resolver) conflictedSubgraph(conflicted map[string]bool) map[string]bool {
	// reaches[id]: a conflicted event is reachable from id in one or more steps.
	reaches := map[string]bool{}
	done := map[string]bool{}
	type frame struct {
		id       string
		expanded bool
	}
	var stack []frame
	for id := range conflicted {
		stack = append(stack, frame{id: id})
	}
	for len(stack) > 0 {
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if done[f.id] {
			continue
		}
		auth := r.authEvents(f.id)
		if !f.expanded {
			stack = append(stack, frame{id: f.id, expanded: true})
			for _, a := range auth {
				if !done[a] {
					stack = append(stack, frame{id: a})
				}
			}
			continue
		}
		for _, a := range auth {
			if conflicted[a] || reaches[a] {
				reaches[f.id] = true
				break
			}
		}
		done[f.id] = true
	}
	out := map[string]bool{}
	for id := range done { // done = conflicted events and their auth chains
		if conflicted[id] || reaches[id] {
			out[id] = true
		}
	}
	return out
}

// isPowerEvent: power levels, join rules, and kicks and bans.
func isPowerEvent(ev gomatrixserverlib.PDU) bool {
	if ev.StateKey() == nil {
		return false
	}
	switch ev.Type() {
	case spec.MRoomPowerLevels, spec.MRoomJoinRules:
		return *ev.StateKey() == ""
	case spec.MRoomMember:
		m, err := ev.Membership()
		if err != nil {
			return false
		}
		return (m == spec.Leave || m == spec.Ban) && string(ev.SenderID()) != *ev.StateKey()
	}
	return false
}

// senderPower is the sender's power level at the event, from the event's
// own auth events.
func (r *resolver) senderPower(id string) float64 {
	if p, ok := r.powerCache[id]; ok {
		return p
	}
	p := r.computeSenderPower(id)
	r.powerCache[id] = p
	return p
}

func (r *resolver) computeSenderPower(id string) float64 {
	ev, ok := r.in.Event(id)
	if !ok {
		return 0
	}
	sender := string(ev.SenderID())
	var pl, create gomatrixserverlib.PDU
	for _, a := range ev.AuthEventIDs() {
		aev, ok := r.in.Event(a)
		if !ok || aev.StateKey() == nil || *aev.StateKey() != "" {
			continue
		}
		switch aev.Type() {
		case spec.MRoomPowerLevels:
			pl = aev
		case spec.MRoomCreate:
			create = aev
		}
	}
	if ev.Type() == spec.MRoomCreate && ev.StateKeyEquals("") {
		create = ev
	}
	if create != nil {
		if v, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && v.PrivilegedCreators() {
			for _, c := range Creators(create) {
				if c == sender {
					return math.Inf(1)
				}
			}
		}
	}
	if pl == nil {
		if create != nil && creatorOf(create) == sender {
			return 100
		}
		return 0
	}
	content, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl)
	if err != nil {
		return 0
	}
	return float64(content.UserLevel(ev.SenderID()))
}

// creatorOf is the creator of a pre-v12 room: content.creator before room
// version 11, the sender since.
func creatorOf(create gomatrixserverlib.PDU) string {
	if c := gjson.GetBytes(create.Content(), "creator"); c.Type == gjson.String {
		if v, err := gomatrixserverlib.GetRoomVersion(create.Version()); err == nil && v.CreatorInCreateEvent() {
			return c.Str
		}
	}
	return string(create.SenderID())
}

// Creators are a v12 room's creators: the create event's sender and the
// strings of content.additional_creators.
func Creators(create gomatrixserverlib.PDU) []string {
	out := []string{string(create.SenderID())}
	for _, c := range gjson.GetBytes(create.Content(), "additional_creators").Array() {
		if c.Type == gjson.String {
			out = append(out, c.Str)
		}
	}
	return out
}

// sortKey orders events in the reverse topological power ordering: higher
// sender power first, then earlier origin_server_ts, then event ID.
type sortKey struct {
	power float64
	ts    int64
	id    string
}

func (a sortKey) less(b sortKey) bool {
	if a.power != b.power {
		return a.power > b.power
	}
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.id < b.id
}

type keyHeap []sortKey

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].less(h[j]) }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(sortKey)) }
func (h *keyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// reverseTopologicalPowerSort adds to the power events their auth chains
// within the full conflicted set and sorts the result with Kahn's
// algorithm, earliest first, breaking ties by sortKey.
func (r *resolver) reverseTopologicalPowerSort(power []string, full map[string]bool) []string {
	// graph[id] = auth events of id within the full conflicted set.
	graph := map[string][]string{}
	stack := append([]string{}, power...)
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if _, ok := graph[id]; ok {
			continue
		}
		if _, ok := r.in.Event(id); !ok {
			continue
		}
		edges := []string{}
		for _, a := range r.authEvents(id) {
			if !full[a] {
				continue
			}
			if _, ok := r.in.Event(a); !ok {
				continue
			}
			edges = append(edges, a)
			if _, ok := graph[a]; !ok {
				stack = append(stack, a)
			}
		}
		graph[id] = edges
	}
	// Kahn's algorithm from the events with no auth events in the graph.
	pending := map[string]int{}
	children := map[string][]string{}
	for id, edges := range graph {
		seen := map[string]bool{}
		for _, a := range edges {
			if seen[a] {
				continue
			}
			seen[a] = true
			pending[id]++
			children[a] = append(children[a], id)
		}
	}
	h := &keyHeap{}
	for id := range graph {
		if pending[id] == 0 {
			heap.Push(h, r.sortKeyOf(id))
		}
	}
	out := make([]string, 0, len(graph))
	for h.Len() > 0 {
		k := heap.Pop(h).(sortKey)
		out = append(out, k.id)
		for _, c := range children[k.id] {
			pending[c]--
			if pending[c] == 0 {
				heap.Push(h, r.sortKeyOf(c))
			}
		}
	}
	return out
}

func (r *resolver) sortKeyOf(id string) sortKey {
	ev, _ := r.in.Event(id)
	return sortKey{power: r.senderPower(id), ts: int64(ev.OriginServerTS()), id: id}
}

// powerLevelsAuthEvent is the m.room.power_levels event among an event's
// auth events, or "".
func (r *resolver) powerLevelsAuthEvent(ev gomatrixserverlib.PDU) string {
	for _, a := range ev.AuthEventIDs() {
		aev, ok := r.in.Event(a)
		if ok && aev.Type() == spec.MRoomPowerLevels && aev.StateKeyEquals("") {
			return a
		}
	}
	return ""
}

// mainlineSort orders events by their position on the mainline of the
// power levels event pl (earlier mainline first), then origin_server_ts,
// then event ID.
func (r *resolver) mainlineSort(ids []string, pl string) []string {
	var mainline []string
	seen := map[string]bool{}
	for cur := pl; cur != "" && !seen[cur]; {
		seen[cur] = true
		mainline = append(mainline, cur)
		ev, ok := r.in.Event(cur)
		if !ok {
			break
		}
		cur = r.powerLevelsAuthEvent(ev)
	}
	position := make(map[string]int, len(mainline))
	for i, id := range mainline {
		position[id] = len(mainline) - i // oldest is 1
	}
	type ordered struct {
		depth int
		ts    int64
		id    string
	}
	keys := make([]ordered, 0, len(ids))
	for _, id := range ids {
		ev, _ := r.in.Event(id)
		depth := 0
		visited := map[string]bool{}
		for cur := ev; cur != nil && !visited[cur.EventID()]; {
			visited[cur.EventID()] = true
			if p, ok := position[cur.EventID()]; ok {
				depth = p
				break
			}
			next := r.powerLevelsAuthEvent(cur)
			cur = nil
			if next != "" {
				cur, _ = r.in.Event(next)
			}
		}
		keys = append(keys, ordered{depth, int64(ev.OriginServerTS()), id})
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.depth != b.depth {
			return a.depth < b.depth
		}
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		return a.id < b.id
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.id
	}
	return out
}

// iterativeAuthChecks applies each event in order to the state when the
// auth rules allow it against the state so far, falling back to the
// event's own (non-rejected) auth events for keys the state lacks.
func (r *resolver) iterativeAuthChecks(ids []string, state StateMap) StateMap {
	out := make(StateMap, len(state)+len(ids))
	for k, v := range state {
		out[k] = v
	}
	for _, id := range ids {
		ev, ok := r.in.Event(id)
		if !ok || ev.StateKey() == nil {
			continue
		}
		auth := map[Key]gomatrixserverlib.PDU{}
		for _, a := range ev.AuthEventIDs() {
			aev, ok := r.in.Event(a)
			if !ok || aev.StateKey() == nil || r.in.Rejected(a) {
				continue
			}
			auth[Key{aev.Type(), *aev.StateKey()}] = aev
		}
		for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
			k := Key{t.EventType, t.StateKey}
			sid, ok := out[k]
			if !ok {
				continue
			}
			if sev, ok := r.in.Event(sid); ok && !r.in.Rejected(sid) {
				auth[k] = sev
			}
		}
		if r.allowed(ev, auth) {
			out[Key{ev.Type(), *ev.StateKey()}] = id
		}
	}
	return out
}

// allowed runs the auth rules, treating a panic in the library (malformed
// content it does not expect) as a rejection.
func (r *resolver) allowed(ev gomatrixserverlib.PDU, auth map[Key]gomatrixserverlib.PDU) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	events := make([]gomatrixserverlib.PDU, 0, len(auth))
	for _, a := range auth {
		events = append(events, a)
	}
	provider, err := gomatrixserverlib.NewAuthEvents(events)
	if err != nil {
		return false
	}
	if r.in.Allowed != nil {
		return r.in.Allowed(ev, provider) == nil
	}
	return gomatrixserverlib.Allowed(ev, provider, r.in.UserIDForSender) == nil
}
