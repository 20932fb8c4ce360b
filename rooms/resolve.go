package rooms

import (
	"context"
	"maps"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/stateres"
	"github.com/hearth-matrix/hearth/storage"
)

// maxAuthChain bounds how many auth events one state resolution may load,
// so a crafted DAG cannot make the server walk without end.
const maxAuthChain = 20000

// resolveStates merges the states at several forward extremities (or prev
// events) with the room version's state resolution: Hearth's own (package
// stateres) for v2.1 rooms and for MSC3757 rooms (whose auth rules the
// library's resolution would not apply), gomatrixserverlib's for the
// others.
func (r *Rooms) resolveStates(ctx context.Context, q storage.Reader, ver gomatrixserverlib.IRoomVersion, sets []map[storage.StateKey]string) (State, error) {
	if len(sets) == 0 {
		return State{}, nil
	}
	same := true
	for _, s := range sets[1:] {
		if !maps.Equal(s, sets[0]) {
			same = false
			break
		}
	}
	if same {
		return maps.Clone(State(sets[0])), nil
	}
	idSet := map[string]bool{}
	for _, s := range sets {
		for _, id := range s {
			idSet[id] = true
		}
	}
	ids := make([]string, 0, len(idSet))
	for id := range idSet {
		ids = append(ids, id)
	}
	evs, err := r.Events(ctx, q, ids)
	if err != nil {
		return nil, err
	}
	pdus := make([]gomatrixserverlib.PDU, 0, len(evs))
	rejected := map[string]bool{}
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
		if ev.Rejected {
			rejected[ev.EventID] = true
		}
	}
	chain, err := r.authChain(ctx, q, pdus)
	if err != nil {
		return nil, err
	}
	for _, ev := range chain {
		if ev.Rejected {
			rejected[ev.EventID] = true
		}
	}
	owned := false
	if ev := evs[sets[0][storage.StateKey{Type: spec.MRoomCreate}]]; ev != nil {
		owned = ownedState(ev.PDU)
	}
	if ver.StateResAlgorithm() == gomatrixserverlib.StateResV2_1 || owned {
		return resolveOwn(ver.StateResAlgorithm(), sets, evs, chain, rejected)
	}
	chainPDUs := make([]gomatrixserverlib.PDU, 0, len(chain))
	for _, ev := range chain {
		chainPDUs = append(chainPDUs, ev.PDU)
	}
	resolved, err := gomatrixserverlib.ResolveConflicts(ver.Version(), pdus, chainPDUs, userIDForSender, func(id string) bool { return rejected[id] })
	if err != nil {
		return nil, err
	}
	out := State{}
	for _, p := range resolved {
		if p.StateKey() != nil {
			out[storage.StateKey{Type: p.Type(), StateKey: *p.StateKey()}] = p.EventID()
		}
	}
	return out, nil
}

// authChain loads the auth events of evs, transitively.
func (r *Rooms) authChain(ctx context.Context, q storage.Reader, pdus []gomatrixserverlib.PDU) ([]*Event, error) {
	seen := map[string]*Event{}
	var next []string
	for _, p := range pdus {
		next = append(next, p.AuthEventIDs()...)
	}
	for len(next) > 0 && len(seen) < maxAuthChain {
		var load []string
		for _, id := range next {
			if _, ok := seen[id]; !ok {
				load = append(load, id)
				seen[id] = nil
			}
		}
		next = nil
		evs, err := r.Events(ctx, q, load)
		if err != nil {
			return nil, err
		}
		for id, ev := range evs {
			seen[id] = ev
			next = append(next, ev.PDU.AuthEventIDs()...)
		}
	}
	out := make([]*Event, 0, len(seen))
	for _, ev := range seen {
		if ev != nil {
			out = append(out, ev)
		}
	}
	return out, nil
}

// resolveOwn runs stateres over the loaded state and auth chain events,
// with the room core's auth rules.
func resolveOwn(alg gomatrixserverlib.StateResAlgorithm, sets []map[storage.StateKey]string, evs map[string]*Event, chain []*Event, rejected map[string]bool) (State, error) {
	pdus := make(map[string]gomatrixserverlib.PDU, len(evs)+len(chain))
	for id, ev := range evs {
		pdus[id] = ev.PDU
	}
	for _, ev := range chain {
		pdus[ev.EventID] = ev.PDU
	}
	in := stateres.Input{
		Algorithm: alg,
		StateSets: make([]stateres.StateMap, len(sets)),
		Event: func(id string) (gomatrixserverlib.PDU, bool) {
			p, ok := pdus[id]
			return p, ok
		},
		Rejected:        func(id string) bool { return rejected[id] },
		UserIDForSender: userIDForSender,
		Allowed:         allowed,
	}
	for i, s := range sets {
		m := make(stateres.StateMap, len(s))
		for k, id := range s {
			m[stateres.Key{Type: k.Type, StateKey: k.StateKey}] = id
		}
		in.StateSets[i] = m
	}
	resolved, err := stateres.Resolve(in)
	if err != nil {
		return nil, err
	}
	out := make(State, len(resolved))
	for k, id := range resolved {
		out[storage.StateKey{Type: k.Type, StateKey: k.StateKey}] = id
	}
	return out, nil
}
