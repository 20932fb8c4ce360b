package rooms

import (
	"context"
	"encoding/json"

	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/storage"
)

// A state sent to another server (send_join, /state, /state_ids) is sent
// as stored: in a big room it is tens of thousands of events, which
// loading as parsed events (the event cache's form) made most of the
// answer's time. Only a redacted event is parsed, to be sent redacted.

// eventJSONs returns the JSON of events as another server is sent them
// (redacted where they were redacted); missing IDs are left out. A big
// read is split over the CPUs (pooled read connections).
func (r *Rooms) eventJSONs(ctx context.Context, ids []string) (map[string]json.RawMessage, error) {
	rows, err := readInParts(ids, func(chunk []string) ([]storage.EventJSON, error) {
		return storage.GetEventJSONs(ctx, r.db.Read(), chunk)
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(ids))
	var redacted []string
	for _, e := range rows {
		if e.Redacted {
			redacted = append(redacted, e.EventID)
			continue
		}
		out[e.EventID] = e.JSON
	}
	if len(redacted) > 0 {
		evs, err := r.Events(ctx, r.db.Read(), redacted)
		if err != nil {
			return nil, err
		}
		for id, ev := range evs {
			out[id] = ev.PDU.JSON()
		}
	}
	return out, nil
}

// authEventIDsOf reads the auth_events of stored event JSON (the first key
// of canonical JSON, so found at once).
func authEventIDsOf(raw json.RawMessage) []string {
	var ids []string
	for _, id := range gjson.GetBytes(raw, "auth_events").Array() {
		ids = append(ids, id.Str)
	}
	return ids
}

// servedState loads the events of st and their auth chain (with the auth
// chain of extraAuth: a join's own auth events), as sent to another
// server. With chainOmitsState the chain leaves out what the state holds
// (a partial send_join answer: "any events returned within state can be
// omitted from auth_chain", MSC3706); a full answer keeps them, for the
// library's PerformJoin looks for the create event in auth_chain.
func (r *Rooms) servedState(ctx context.Context, st State, extraAuth []string, chainOmitsState bool) (state, chain map[string]json.RawMessage, err error) {
	ids := make([]string, 0, len(st))
	for _, id := range st {
		ids = append(ids, id)
	}
	if state, err = r.eventJSONs(ctx, ids); err != nil {
		return nil, nil, err
	}
	chain = map[string]json.RawMessage{}
	seen := make(map[string]bool, len(state))
	next := append([]string{}, extraAuth...)
	for _, raw := range state {
		next = append(next, authEventIDsOf(raw)...)
	}
	for len(next) > 0 && len(seen) < maxAuthChain {
		var load []string
		for _, id := range next {
			if seen[id] {
				continue
			}
			seen[id] = true
			if raw, ok := state[id]; ok {
				if !chainOmitsState {
					chain[id] = raw
				}
				continue // its auth events are in next already
			}
			load = append(load, id)
		}
		next = nil
		loaded, err := r.eventJSONs(ctx, load)
		if err != nil {
			return nil, nil, err
		}
		for id, raw := range loaded {
			chain[id] = raw
			next = append(next, authEventIDsOf(raw)...)
		}
	}
	return state, chain, nil
}
