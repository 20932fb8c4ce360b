package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Remote is what the room core needs from federation when the DAG has
// holes. It is defined here and implemented by the federation package, so
// the room core never imports federation.
type Remote interface {
	// MissingEvents asks server for events between the earliest we have and
	// latest (server-server API, get_missing_events), oldest first or in any order.
	MissingEvents(ctx context.Context, server spec.ServerName, roomID string, earliest, latest []string, limit int, minDepth int64) ([]json.RawMessage, error)
	// StateIDsAt asks server for the state before eventID (state_ids).
	StateIDsAt(ctx context.Context, server spec.ServerName, roomID, eventID string) (stateIDs, authChainIDs []string, err error)
	// Event fetches one event from server.
	Event(ctx context.Context, server spec.ServerName, eventID string) (json.RawMessage, error)
}

// SetFederation plugs in the key ring (signature verification) and the
// federation clients.
func (r *Rooms) SetFederation(keyRing *gomatrixserverlib.KeyRing, remote Remote, joins JoinClient) {
	r.keyRing, r.verifier, r.remote, r.joins = keyRing, keyRing, remote, joins
}

// Limits on the work one received PDU may cause.
const (
	maxMissingEvents = 20 // per get_missing_events request
	maxFetchedEvents = 500
)

// unavailableError is a remote event's auth or prior state that could not
// be fetched.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

// ErrUnknownRoom is returned for PDUs of rooms this server is not in.
var ErrUnknownRoom = errors.New("this server is not in the room")

// ParsePDU parses a PDU a remote server sent in a transaction for its
// room's version, so its event ID is known (the result in the transaction
// response is keyed by it) before ReceivePDU takes it on. A content hash
// mismatch keeps the redacted form. It fails for a PDU without a room ID,
// of a room we do not know (ErrUnknownRoom), or that does not parse.
func (r *Rooms) ParsePDU(ctx context.Context, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	roomID := gjson.GetBytes(raw, "room_id").String()
	if roomID == "" {
		return nil, errors.New("the PDU has no room_id")
	}
	ver, err := r.roomVersion(ctx, r.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, fmt.Errorf("room %s: %w", roomID, ErrUnknownRoom)
	}
	if err != nil {
		return nil, err
	}
	return parsePDU(ver, raw)
}

// ReceivePDU handles one PDU a remote server sent, as ParsePDU parsed it
// (server-server API, Checks performed on receipt of a PDU): check its
// signatures, fetch missing prev and auth events, then authorise and
// persist it. The error is the PDU's result in the transaction response;
// nil means accepted (rejected and soft-failed events are accepted and
// stored as such, as the spec says).
func (r *Rooms) ReceivePDU(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU) error {
	roomID := pdu.RoomID().String()
	// The room's version, not pdu.Version(): ParsePDU found the room.
	ver, err := r.roomVersion(ctx, r.db.Read(), roomID)
	if err != nil {
		return err
	}
	if err := r.verifyRemote(ctx, pdu); err != nil {
		return err
	}
	if live, err := r.CanJoinLocally(ctx, roomID); err != nil {
		return err
	} else if !live {
		if done, err := r.receiveOutOfRoom(ctx, origin, pdu); done || err != nil {
			return err
		}
	}
	budget := maxFetchedEvents
	if err := r.ingest(ctx, origin, ver, pdu, &budget, pushedEvent); err != nil {
		var u unavailableError
		if errors.As(err, &u) {
			// The event cannot be placed: the auth or state events it
			// needs could not be had from its sender. It is dropped as if
			// never received (a later event that references it brings it
			// back through get_missing_events); nothing about the event
			// itself is wrong, so no error goes back for it.
			r.log.Warn("dropping a remote event whose auth or state events are unavailable", "event", pdu.EventID(), "origin", origin, "err", u.err)
			return nil
		}
		return err
	}
	// A rejected event was handled all the same (stored, so the DAG stays
	// whole, and never shown): like Synapse, no error goes back for it,
	// which the sender could not act on anyway.
	if ev, err := r.Event(ctx, pdu.EventID()); err == nil && ev.Rejected {
		r.log.Info("a remote event was rejected", "event", pdu.EventID(), "origin", origin)
	}
	return nil
}

// receiveOutOfRoom takes the one kind of PDU that concerns a room whose
// live copy is elsewhere: the resident server withdrawing an invite to (or
// refusing a knock of) one of our users, a leave or ban whose sender is on
// the origin (for an invite: the inviter). It is kept like the invite was,
// so the user's sync shows it; another user's kick of the invitee is
// dropped, and the invite stands.
// done is false for anything else, which goes the usual way.
func (r *Rooms) receiveOutOfRoom(ctx context.Context, origin spec.ServerName, pdu gomatrixserverlib.PDU) (done bool, err error) {
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || !r.isLocal(*pdu.StateKey()) {
		return false, nil
	}
	m, err := pdu.Membership()
	if err != nil || (m != spec.Leave && m != spec.Ban) {
		return false, nil
	}
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return false, nil
	}
	current, currentID, err := storage.CurrentMembership(ctx, r.db.Read(), pdu.RoomID().String(), *pdu.StateKey())
	if err != nil || (current != spec.Invite && current != spec.Knock) {
		return false, err
	}
	if !slices.Contains(pdu.AuthEventIDs(), currentID) {
		// Not about the invite (or knock) we hold: its auth events would
		// name it. An older membership change that reaches us late (the
		// unban an invite followed) must not undo the newer invite.
		r.log.Info("ignoring a membership change that does not follow the invite or knock we hold",
			"room", pdu.RoomID().String(), "event", pdu.EventID(), "held", currentID)
		return true, nil
	}
	if current == spec.Invite {
		// Only the inviter can withdraw an invite: anyone else's kick of an
		// invitee we cannot check against the room's state (we are not in
		// it), and the room's server may well have refused it.
		invite, err := storage.GetEvent(ctx, r.db.Read(), currentID)
		if err != nil {
			return true, fmt.Errorf("reading the invite being withdrawn: %w", err)
		}
		if invite.Sender != string(pdu.SenderID()) {
			r.log.Info("ignoring the withdrawal of an invite by someone other than the inviter",
				"room", pdu.RoomID().String(), "event", pdu.EventID(), "sender", pdu.SenderID(), "inviter", invite.Sender)
			return true, nil
		}
	}
	_, err = r.persist(ctx, incoming{arrival: arriveOutOfRoom, pdu: pdu})
	return true, err
}

// parseRemote parses and signature-checks a remote event.
func (r *Rooms) parseRemote(ctx context.Context, ver gomatrixserverlib.IRoomVersion, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	pdu, err := parsePDU(ver, raw)
	if err != nil {
		return nil, err
	}
	if err := r.verifyRemote(ctx, pdu); err != nil {
		return nil, err
	}
	return pdu, nil
}

// parsePDU parses a remote event for its room's version. JSON nested
// deeper than anything a real event needs is refused before the library's
// canonical-JSON checks, whose cost grows steeply with depth.
func parsePDU(ver gomatrixserverlib.IRoomVersion, raw json.RawMessage) (gomatrixserverlib.PDU, error) {
	if mxhttp.JSONDepth(raw) > mxhttp.MaxJSONDepth {
		return nil, fmt.Errorf("invalid event: JSON nests deeper than %d levels", mxhttp.MaxJSONDepth)
	}
	pdu, err := ver.NewEventFromUntrustedJSON(raw)
	var verr gomatrixserverlib.EventValidationError
	if errors.As(err, &verr) && verr.Persistable && pdu != nil {
		// Too many bytes in a type or state key in a room version from
		// before the byte limits (v11): such events exist in old rooms
		// and are kept, as the rules of their version allow.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("invalid event: %w", err)
	}
	if err := checkRoomID(pdu); err != nil {
		return nil, err
	}
	pdu.EventID() // computed lazily; compute once before sharing
	return pdu, nil
}

// checkRoomID refuses an event whose room ID the library cannot read: it
// parses room_id only when asked, and panics on one that is malformed
// (found by FuzzPDU), which every later step asks for.
func checkRoomID(pdu gomatrixserverlib.PDU) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("invalid event: bad room_id: %v", p)
		}
	}()
	pdu.RoomID()
	return nil
}

// verifyRemote checks a remote event's signatures.
func (r *Rooms) verifyRemote(ctx context.Context, pdu gomatrixserverlib.PDU) error {
	if r.verifier == nil {
		return errors.New("federation is not configured")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, r.verifier, userIDForSender); err != nil {
		return fmt.Errorf("bad signatures: %w", err)
	}
	return nil
}

func (r *Rooms) known(ctx context.Context, ids []string) (map[string]*Event, error) {
	return r.Events(ctx, r.db.Read(), ids)
}

// holePolicy says what ingest does about prev events it lacks.
type holePolicy int

const (
	// pulledEvent: an event we fetched ourselves (get_missing_events): the
	// state before it comes from state_ids.
	pulledEvent holePolicy = iota
	// fetchHoles: ask get_missing_events for what lies between, then
	// state_ids for what remains.
	fetchHoles
	// pushedEvent: an event another server pushed (/send): ask
	// get_missing_events; if that does not reach our copy, the event is
	// refused, not taken on state_ids' word: it could otherwise become the
	// room's only forward extremity with state we cannot check (as Synapse).
	pushedEvent
)

// errMissingPrevEvents refuses a pushed event whose prev events could not
// be fetched.
var errMissingPrevEvents = errors.New("not all prev_events are available")

// ingest persists a verified remote event, first filling holes before it.
func (r *Rooms) ingest(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU, budget *int, holes holePolicy) error {
	have, err := r.known(ctx, []string{pdu.EventID()})
	if err != nil {
		return err
	}
	if ev, ok := have[pdu.EventID()]; ok && !ev.Outlier {
		return nil // already have it
	}
	roomID := pdu.RoomID().String()
	// Prev events first, then auth events, as Synapse does: what fills a
	// hole before the event often brings its auth events too.
	prevs, err := r.knownInDAG(ctx, pdu.PrevEventIDs())
	if err != nil {
		return err
	}
	var stateBefore State
	if len(prevs) < len(pdu.PrevEventIDs()) && holes != pulledEvent && r.remote != nil {
		// Ask for what lies between our extremities and this event, oldest
		// first, and ingest those first.
		room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
		if err != nil {
			return err
		}
		raws, err := r.remote.MissingEvents(ctx, origin, roomID, room.Extremities, []string{pdu.EventID()}, maxMissingEvents, 0)
		if err == nil {
			var missing []gomatrixserverlib.PDU
			for _, raw := range raws {
				if *budget <= 0 {
					break
				}
				*budget--
				p, err := r.parseRemote(ctx, ver, raw)
				if err != nil || p.RoomID().String() != roomID {
					continue // a bad event among the missing ones is dropped
				}
				missing = append(missing, p)
			}
			sort.Slice(missing, func(i, j int) bool { return missing[i].Depth() < missing[j].Depth() })
			for _, p := range missing {
				if err := r.ingest(ctx, origin, ver, p, budget, pulledEvent); err != nil {
					r.log.Debug("ingesting a missing event", "event", p.EventID(), "err", err)
				}
			}
		}
		if prevs, err = r.knownInDAG(ctx, pdu.PrevEventIDs()); err != nil {
			return err
		}
	}
	if len(prevs) < len(pdu.PrevEventIDs()) {
		if holes == pushedEvent {
			r.log.Info("refusing a pushed event: its prev events could not be fetched", "event", pdu.EventID(), "room", roomID)
			return errMissingPrevEvents
		}
		// Still a gap: take the state before the event from the origin.
		if r.remote == nil {
			return errors.New("missing prev events and no federation to fetch them")
		}
		if stateBefore, err = r.fetchStateBefore(ctx, origin, ver, pdu, prevs, budget); err != nil {
			return unavailableError{fmt.Errorf("fetching state before %s: %w", pdu.EventID(), err)}
		}
	}
	// Missing auth events are fetched and stored as outliers. One that
	// cannot be had leaves the event rejected (rejection), as its
	// authorisation cannot be shown.
	if err := r.fetchAuthEvents(ctx, origin, ver, pdu, budget); err != nil {
		r.log.Info("an auth event of a remote event is unavailable", "event", pdu.EventID(), "err", err)
	}
	pdu, policyOK := r.policyCheckReceived(ctx, pdu)
	_, err = r.persist(ctx, incoming{arrival: arriveLive, pdu: pdu, prevs: prevs, stateBefore: stateBefore, policyRefused: !policyOK})
	return err
}

// knownInDAG are the events of ids we have with a state: outliers (auth
// events fetched on their own) have none, so they cannot stand as prev
// events; an event whose prev events are outliers is treated as a gap.
func (r *Rooms) knownInDAG(ctx context.Context, ids []string) (map[string]*Event, error) {
	evs, err := r.known(ctx, ids)
	if err != nil {
		return nil, err
	}
	for id, ev := range evs {
		if ev.Outlier {
			delete(evs, id)
		}
	}
	return evs, nil
}

// fetchAuthEvents makes sure every auth event of pdu is stored, fetching
// missing ones (and theirs) from origin as outliers after checking them.
func (r *Rooms) fetchAuthEvents(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU, budget *int) error {
	have, err := r.known(ctx, pdu.AuthEventIDs())
	if err != nil {
		return err
	}
	for _, id := range pdu.AuthEventIDs() {
		if _, ok := have[id]; ok {
			continue
		}
		if r.remote == nil || *budget <= 0 {
			return fmt.Errorf("missing auth event %s", id)
		}
		*budget--
		raw, err := r.remote.Event(ctx, origin, id)
		if err != nil {
			return fmt.Errorf("fetching auth event %s: %w", id, err)
		}
		ap, err := r.parseRemote(ctx, ver, raw)
		if err != nil || ap.EventID() != id {
			return fmt.Errorf("auth event %s from %s is invalid: %v", id, origin, err)
		}
		if err := r.fetchAuthEvents(ctx, origin, ver, ap, budget); err != nil {
			return err
		}
		if _, err := r.persist(ctx, incoming{arrival: arriveOutlier, pdu: ap}); err != nil {
			return err
		}
	}
	return nil
}

// fetchStateBefore works out the state before pdu when some of its prev
// events are missing: for each missing prev event P the origin gives the
// state before P (state_ids at P), P itself is fetched, and the state after
// P is that plus P; known prev events give their own state after. The
// states are then resolved. Events the origin cannot produce are left out,
// and so are events rejected against their auth events.
func (r *Rooms) fetchStateBefore(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU, prevs map[string]*Event, budget *int) (State, error) {
	roomID := pdu.RoomID().String()
	var sets []map[storage.StateKey]string
	for _, prevID := range pdu.PrevEventIDs() {
		if p, ok := prevs[prevID]; ok {
			s, err := r.snapshotState(ctx, r.db.Read(), p.SnapshotAfter)
			if err != nil {
				return nil, err
			}
			sets = append(sets, s.state)
			continue
		}
		stateIDs, authIDs, err := r.remote.StateIDsAt(ctx, origin, roomID, prevID)
		if err != nil {
			return nil, err
		}
		all := append(append(append([]string{}, authIDs...), stateIDs...), prevID)
		if err := r.fetchOutliers(ctx, origin, ver, all, budget); err != nil {
			return nil, err
		}
		evs, err := r.known(ctx, append(stateIDs, prevID))
		if err != nil {
			return nil, err
		}
		st := map[storage.StateKey]string{}
		for _, id := range stateIDs {
			if ev, ok := evs[id]; ok && ev.StateKey != nil && !ev.Rejected {
				st[storage.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = id
			}
		}
		if ev, ok := evs[prevID]; ok && ev.StateKey != nil && !ev.Rejected {
			st[storage.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = prevID
		}
		sets = append(sets, st)
	}
	return r.resolveStates(ctx, r.db.Read(), ver, sets)
}

// fetchOutliers fetches the events of ids we lack from origin and stores
// them as outliers, oldest first; events origin cannot produce (or sends
// broken) are skipped with a log line.
func (r *Rooms) fetchOutliers(ctx context.Context, origin spec.ServerName, ver gomatrixserverlib.IRoomVersion, ids []string, budget *int) error {
	have, err := r.known(ctx, ids)
	if err != nil {
		return err
	}
	var fetched []gomatrixserverlib.PDU
	seen := map[string]bool{}
	for _, id := range ids {
		if _, ok := have[id]; ok || seen[id] {
			continue
		}
		seen[id] = true
		if *budget <= 0 {
			return errors.New("too many events to fetch")
		}
		*budget--
		raw, err := r.remote.Event(ctx, origin, id)
		if err != nil {
			r.log.Info("an event of the state before a hole is unavailable", "event", id, "origin", origin, "err", err)
			continue
		}
		p, err := r.parseRemote(ctx, ver, raw)
		if err != nil || p.EventID() != id {
			r.log.Info("dropping a broken event of the state before a hole", "event", id, "origin", origin, "err", err)
			continue
		}
		fetched = append(fetched, p)
	}
	sort.Slice(fetched, func(i, j int) bool { return fetched[i].Depth() < fetched[j].Depth() })
	for _, p := range fetched {
		if _, err := r.persist(ctx, incoming{arrival: arriveOutlier, pdu: p}); err != nil {
			return err
		}
	}
	return nil
}

// snapshotFor returns a snapshot holding exactly st: base itself if equal,
// else a new one (a delta on base when small).
func (r *Rooms) snapshotFor(ctx context.Context, tx *sql.Tx, roomID string, base *snapshot, st map[storage.StateKey]string, snaps *[]*snapshot) (*snapshot, error) {
	if equalState(base.state, st) {
		return base, nil
	}
	changes := State{}
	for k, id := range st {
		if base.state[k] != id {
			changes[k] = id
		}
	}
	removed := false
	for k := range base.state {
		if _, ok := st[k]; !ok {
			removed = true
		}
	}
	var s *snapshot
	var err error
	if removed {
		// Deltas only add or replace; a removal needs a full snapshot.
		s, err = r.newSnapshot(ctx, tx, roomID, &snapshot{}, State(st))
	} else {
		s, err = r.newSnapshot(ctx, tx, roomID, base, changes)
	}
	if err != nil {
		return nil, err
	}
	*snaps = append(*snaps, s)
	return s, nil
}

func equalState(a, b map[storage.StateKey]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// stateProvider loads the events of st that pdu's auth needs, taking
// events written earlier in the same transaction from pending.
func (r *Rooms) stateProvider(ctx context.Context, q storage.Reader, st map[storage.StateKey]string, pdu gomatrixserverlib.PDU, pending map[string]*Event) (*gomatrixserverlib.AuthEvents, error) {
	needed := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu})
	var ids []string
	for _, t := range needed.Tuples() {
		if id, ok := st[storage.StateKey{Type: t.EventType, StateKey: t.StateKey}]; ok {
			ids = append(ids, id)
		}
	}
	return r.authEventsFor(ctx, q, ids, pending)
}

// updateCurrentState applies the difference between two states to the
// materialised current_state table.
func (r *Rooms) updateCurrentState(ctx context.Context, tx *sql.Tx, roomID string, old, now map[storage.StateKey]string) error {
	for k := range old {
		if _, ok := now[k]; !ok {
			if err := storage.DeleteCurrentState(ctx, tx, roomID, k); err != nil {
				return err
			}
		}
	}
	var changed, members []string
	for k, id := range now {
		if old[k] != id {
			changed = append(changed, id)
			if k.Type == spec.MRoomMember {
				members = append(members, id) // only these have a membership
			}
		}
	}
	memberships, err := r.memberships(ctx, tx, members)
	if err != nil {
		return err
	}
	set := make([]storage.CurrentStateEntry, 0, len(changed))
	for k, id := range now {
		if old[k] == id {
			continue
		}
		if k.Type == spec.MRoomMember && r.isLocal(k.StateKey) {
			if keep, err := r.newerOutOfRoomMembership(ctx, tx, roomID, k.StateKey, old[k], id); err != nil {
				return err
			} else if keep {
				continue
			}
		}
		set = append(set, storage.CurrentStateEntry{Key: k, EventID: id, Membership: memberships[id]})
	}
	return storage.SetCurrentStates(ctx, tx, roomID, set)
}

// newerOutOfRoomMembership reports whether a local user's current
// membership is one stored outside the DAG (an invite to a room we had
// left, taken from /invite) that is newer than the DAG event about to
// replace it. An older change can reach the DAG after the invite (the
// unban the invite follows, whose transaction raced the /invite) and must
// not undo it.
func (r *Rooms) newerOutOfRoomMembership(ctx context.Context, tx *sql.Tx, roomID, userID, oldID, newID string) (bool, error) {
	_, curID, err := storage.CurrentMembership(ctx, tx, roomID, userID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (curID == oldID || curID == newID) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	evs, err := r.Events(ctx, tx, []string{curID, newID})
	if err != nil {
		return false, err
	}
	cur, next := evs[curID], evs[newID]
	return cur != nil && next != nil && cur.Outlier && cur.Depth > next.Depth, nil
}

// memberships returns the membership column of those of ids that are
// membership events, from the cache or else from the rows, unparsed (a
// join over federation sets a thousand members at once).
func (r *Rooms) memberships(ctx context.Context, q storage.Reader, ids []string) (map[string]*string, error) {
	out := make(map[string]*string, len(ids))
	var rest []string
	for _, id := range ids {
		if ev, ok := r.pdus.get(id); ok {
			out[id] = ev.Membership
		} else {
			rest = append(rest, id)
		}
	}
	rows, err := storage.GetEvents(ctx, q, rest)
	if err != nil {
		return nil, err
	}
	for _, row := range rows {
		out[row.EventID] = row.Membership
	}
	return out, nil
}
