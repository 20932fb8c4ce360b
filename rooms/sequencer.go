package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// maxPDUBytes is the spec's size limit of a PDU (server-server API, Size limits).
const maxPDUBytes = 65536

// maxPrevEvents bounds prev_events of local events when the DAG has many
// forward extremities.
const maxPrevEvents = 20

// Proto is an event a local user asks to send.
type Proto struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	Redacts  string
	// Device, TxnScope and TxnID make the send idempotent per device: a
	// retry with the same transaction returns the first event.
	Device   string
	TxnScope string
	TxnID    string
	// Timestamp, when set, is the event's origin_server_ts instead of now
	// (application services' timestamp massaging); it does not change
	// where the event goes in the DAG.
	Timestamp time.Time
	// InTx, when set, runs in the transaction that persists the event,
	// after it: what the caller writes there commits with the event or
	// not at all (a delayed event's row finalised as sent).
	InTx func(ctx context.Context, tx *sql.Tx, ev *Event) error
	// built is the event already built (a version 12 m.room.create, whose
	// ID names the room before anything is stored).
	built gomatrixserverlib.PDU
}

// maxSendBatch bounds how many waiting sends one transaction commits.
const maxSendBatch = 64

// Send builds, authorises and persists local events in one room, in order,
// in one transaction: either all are committed or none.
//
// Sends to one room queue for its lock (one writer per room, which keeps
// the DAG of local events linear). The caller that gets the lock commits
// every send waiting for the room in one transaction (group commit: one
// commit, one WAL write, for many messages), each in order on top of the
// one before, then completes each waiting caller with its own result. Each
// send runs under a savepoint, so one that fails (auth rules, size, an
// unknown room) is rolled back alone and fails alone; the others commit.
// A send returns once its transaction is committed and observers have
// been told.
func (r *Rooms) Send(ctx context.Context, roomID string, protos ...Proto) ([]*Event, error) {
	evs, err := r.send(ctx, roomID, protos...)
	if errors.Is(err, errPolicyUnsigned) {
		// The room uses a remote policy server, which this process did
		// not know: ask it first this time (policy.go).
		r.policyRooms.Store(roomID, true)
		evs, err = r.send(ctx, roomID, protos...)
	}
	return evs, err
}

func (r *Rooms) send(ctx context.Context, roomID string, protos ...Proto) ([]*Event, error) {
	req := &sendRequest{protos: protos, done: make(chan struct{})}
	rl, unlock := r.locks.lockQueued(roomID, req)
	batch := r.locks.take(rl, req, maxSendBatch)
	if batch == nil {
		// An earlier caller's batch took this send: wait for its result.
		unlock()
		<-req.done
		return req.out, req.err
	}
	if len(batch) > 1 {
		// The transaction is the other callers' too: a client of this one
		// going away must not roll it back.
		ctx = context.WithoutCancel(ctx)
	}
	if r.sendWithPolicyServer(ctx, roomID, batch, unlock) {
		return req.out, req.err
	}
	r.sendBatch(ctx, roomID, batch, unlock)
	return req.out, req.err
}

// sendRequest is one caller's events waiting for the room's writer.
type sendRequest struct {
	protos []Proto
	taken  bool // picked up by a writer; guarded by roomLocks.mu
	done   chan struct{}
	out    []*Event
	err    error
}

// sendBatch persists a batch of sends in one transaction, then releases
// the room (unlock) and tells observers in commit order, then completes
// every request of the batch.
//
// A batch is first written optimistically: without savepoints and
// without looking up transaction IDs. A savepoint per send made SQLite
// copy every page each send touched into its sub-journal, which outgrew
// memory and went to a temporary file (6% of the CPU of a send in
// BenchmarkSendConcurrent); a retried transaction ID is found by the
// primary key of client_txns when its row is inserted. Sends rarely fail
// and clients rarely retry, so when one does the whole transaction is
// rolled back and the batch written again carefully: each transaction ID
// looked up first (a retry gets its first event) and each send under a
// savepoint, where a failing send fails alone.
func (r *Rooms) sendBatch(ctx context.Context, roomID string, batch []*sendRequest, unlock func()) {
	var all []*Event
	var snaps []*snapshot
	// writeErr: the batch's writes failed, not the commit (whose outcome
	// may be unknown: such a batch is not written again).
	var writeErr error
	write := func(careful bool) error {
		return r.db.WriteTx(ctx, func(tx *sql.Tx) error {
			all, snaps, writeErr = r.writeBatch(ctx, tx, roomID, batch, careful)
			return writeErr
		})
	}
	err := write(false)
	if writeErr != nil && (len(batch) > 1 || errors.Is(writeErr, storage.ErrConflict)) {
		// (One send alone fails the same way again unless it was a retry.)
		for _, req := range batch {
			req.out, req.err = nil, nil
		}
		err = write(true)
	}
	if err != nil {
		unlock()
		for _, req := range batch {
			if req.err == nil {
				req.out, req.err = nil, err
			}
		}
	} else {
		r.publish(all, snaps, unlock)
	}
	for _, req := range batch {
		close(req.done)
	}
}

// writeBatch writes a batch of sends in tx and returns the events and
// snapshots written. Carefully, each send's transaction ID is looked up
// first and each send (of several) runs under a savepoint, so a send that
// fails is rolled back alone (its request gets the error); otherwise the
// first failing send, or a transaction ID used before, fails the
// transaction.
func (r *Rooms) writeBatch(ctx context.Context, tx *sql.Tx, roomID string, batch []*sendRequest, careful bool) ([]*Event, []*snapshot, error) {
	room, err := r.db.LockRoom(ctx, tx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, nil, err
	}
	b, err := r.newRoomWrite(ctx, tx, &room)
	if err != nil {
		return nil, nil, err
	}
	for _, req := range batch {
		if !careful || len(batch) == 1 {
			if req.out, err = r.sendOne(ctx, tx, b, req.protos, careful); err != nil {
				return nil, nil, err
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT hearth_send"); err != nil {
			return nil, nil, fmt.Errorf("savepoint: %w", err)
		}
		saved := b.save()
		req.out, req.err = r.sendOne(ctx, tx, b, req.protos, true)
		if req.err != nil {
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT hearth_send"); err != nil {
				return nil, nil, fmt.Errorf("rolling back to savepoint: %w", err)
			}
			b.restore(saved)
			req.out = nil
		}
		if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT hearth_send"); err != nil {
			return nil, nil, fmt.Errorf("releasing savepoint: %w", err)
		}
	}
	if len(b.appended) == 0 {
		return nil, nil, nil
	}
	if err := r.runTxHook(ctx, tx, b.appended); err != nil {
		return nil, nil, err
	}
	if err := storage.UpdateRoomHead(ctx, tx, room.RoomID, room.Extremities, room.MaxDepth, room.CurrentSnapshot); err != nil {
		return nil, nil, err
	}
	return b.appended, b.snaps, nil
}

// committed updates caches and tells observers once a transaction is
// durable, for callers that release the room lock themselves afterwards.
func (r *Rooms) committed(evs []*Event, snaps []*snapshot) {
	r.publish(evs, snaps, nil)
}

// publish updates caches with a committed transaction's events, then tells
// observers. unlock, if set, releases the room once the observers' turn is
// taken: the room's next transaction runs while observers are told about
// this one, yet observers still see every room's events in commit order.
func (r *Rooms) publish(evs []*Event, snaps []*snapshot, unlock func()) {
	r.cache(evs, snaps)
	r.notifyMu.Lock()
	defer r.notifyMu.Unlock()
	if unlock != nil {
		unlock()
	}
	r.notify(evs)
}

// cache puts committed events and snapshots into the caches.
func (r *Rooms) cache(evs []*Event, snaps []*snapshot) {
	r.notePolicyRooms(evs)
	for _, s := range snaps {
		r.snapshots.put(s.id, s)
	}
	for _, ev := range evs {
		if ev.Type == spec.MRoomRedaction {
			if target := ev.PDU.Redacts(); target != "" {
				r.pdus.remove(target)
				// The target may be in a shared timeline or bundle.
				r.forgetShared()
			}
		}
		r.pdus.put(ev.EventID, ev)
	}
}

// txnEvent returns the event an earlier send with the same transaction ID
// produced, or storage.ErrNotFound.
func (r *Rooms) txnEvent(ctx context.Context, tx *sql.Tx, b *roomWrite, p Proto) (*Event, error) {
	id, err := storage.LookupTxn(ctx, tx, p.Sender, p.Device, p.TxnScope, p.TxnID)
	if err != nil {
		return nil, err
	}
	if ev, ok := b.pending[id]; ok {
		return ev, nil // sent earlier in this batch
	}
	evs, err := r.Events(ctx, tx, []string{id})
	if err != nil {
		return nil, err
	}
	if ev, ok := evs[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("transaction %s names missing event %s", p.TxnID, id)
}

// sendOne appends one caller's events. With lookup, it returns instead
// the event of an earlier send with the same transaction ID; without, such
// a send fails with storage.ErrConflict (sendBatch tries again with it).
func (r *Rooms) sendOne(ctx context.Context, tx *sql.Tx, b *roomWrite, protos []Proto, lookup bool) ([]*Event, error) {
	if lookup && len(protos) == 1 && protos[0].TxnID != "" {
		// A retry, possibly racing the first attempt: return its event.
		if ev, err := r.txnEvent(ctx, tx, b, protos[0]); err == nil || !errors.Is(err, storage.ErrNotFound) {
			return []*Event{ev}, err
		}
	}
	mark := len(b.appended)
	if err := r.appendTo(ctx, tx, b, protos); err != nil {
		return nil, err
	}
	return b.appended[mark:len(b.appended):len(b.appended)], nil
}

// appendLocal builds each proto on top of the room's head and persists it,
// with the room's new head. room is updated in place to the new head.
func (r *Rooms) appendLocal(ctx context.Context, tx *sql.Tx, room *storage.Room, protos []Proto) ([]*Event, []*snapshot, error) {
	b, err := r.newRoomWrite(ctx, tx, room)
	if err != nil {
		return nil, nil, err
	}
	if err := r.appendTo(ctx, tx, b, protos); err != nil {
		return nil, nil, err
	}
	if err := storage.UpdateRoomHead(ctx, tx, room.RoomID, room.Extremities, room.MaxDepth, room.CurrentSnapshot); err != nil {
		return nil, nil, err
	}
	return b.appended, b.snaps, nil
}

// appendTo builds each proto on top of the batch's head and persists it;
// the caller records the room's head once for the batch.
func (r *Rooms) appendTo(ctx context.Context, tx *sql.Tx, b *roomWrite, protos []Proto) error {
	room, ver, now, pending := b.room, b.ver, b.now, b.pending
	for _, p := range protos {
		cur := b.cur
		prev := room.Extremities
		if len(prev) > maxPrevEvents {
			prev = prev[len(prev)-maxPrevEvents:]
		}
		content := p.Content
		if len(content) == 0 {
			content = json.RawMessage("{}")
		}
		if p.Type == spec.MRoomMember && p.StateKey != nil && gjson.GetBytes(content, "join_authorised_via_users_server").Exists() {
			// Only a change into join is authorised by another user (and
			// must carry their server's signature): a join over a join,
			// e.g. a new display name, drops the field.
			if id, ok := cur.state[storage.StateKey{Type: spec.MRoomMember, StateKey: *p.StateKey}]; ok {
				prev, ok := pending[id]
				if !ok {
					evs, err := r.Events(ctx, tx, []string{id})
					if err != nil {
						return err
					}
					prev = evs[id]
				}
				var c map[string]json.RawMessage
				if prev != nil && prev.Membership != nil && *prev.Membership == spec.Join && json.Unmarshal(content, &c) == nil {
					delete(c, "join_authorised_via_users_server")
					content, _ = json.Marshal(c)
				}
			}
		}
		// Every local event's content passes here (send, state, createRoom's
		// initial state, profile updates): refuse keys the canonical JSON
		// would mangle (mxhttp.BadObjectKey).
		if key, bad := mxhttp.BadObjectKey(content); bad {
			return mxhttp.BadJSON("Event content has the key %s: keys may not hold quotes, backslashes or control characters", key)
		}
		pdu := p.built
		if pdu == nil {
			var err error
			if pdu, err = r.buildLocal(ctx, tx, ver, room.RoomID, cur.state, prev, room.MaxDepth+1, p, content, now, pending); err != nil {
				return err
			}
		}
		pdu, err := r.policySignature(ctx, tx, b, pdu)
		if err != nil {
			return err
		}
		if len(pdu.JSON()) > maxPDUBytes {
			return mxhttp.TooLarge("The event is larger than %d bytes", maxPDUBytes)
		}
		in := incoming{arrival: arriveLocal, pdu: pdu}
		if p.TxnID != "" {
			in.device, in.txnID = &p.Device, &p.TxnID
		}
		ev, err := r.persistEvent(ctx, tx, b, in)
		if err != nil {
			return err
		}
		if p.TxnID != "" {
			if err := storage.InsertTxn(ctx, tx, p.Sender, p.Device, p.TxnScope, p.TxnID, ev.EventID, now.UnixMilli()); err != nil {
				return err
			}
		}
		if p.InTx != nil {
			if err := p.InTx(ctx, tx, ev); err != nil {
				return err
			}
		}
	}
	return nil
}

// buildLocal builds and signs a local event on prev at depth, with its
// auth events chosen from the state before it (st).
func (r *Rooms) buildLocal(ctx context.Context, q storage.Reader, ver gomatrixserverlib.IRoomVersion, roomID string, st map[storage.StateKey]string,
	prev []string, depth int64, p Proto, content json.RawMessage, now time.Time, pending map[string]*Event) (gomatrixserverlib.PDU, error) {
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, RoomID: roomID, Type: p.Type, StateKey: p.StateKey,
		PrevEvents: append([]string{}, prev...), AuthEvents: []string{},
		Depth: depth, Content: spec.RawJSON(content), Redacts: p.Redacts, Version: ver,
	}
	provider, err := r.authProvider(ctx, q, st, proto, pending)
	if err != nil {
		return nil, fmt.Errorf("loading auth events: %w", err)
	}
	builder := ver.NewEventBuilderFromProtoEvent(proto)
	if err := builder.AddAuthEvents(provider); err != nil {
		return nil, fmt.Errorf("selecting auth events: %w", err)
	}
	ts := now
	if !p.Timestamp.IsZero() {
		ts = p.Timestamp
	}
	pdu, err := r.fastBuild(ver, builder, ts)
	if pdu == nil && err == nil {
		pdu, err = builder.Build(ts, r.serverName, r.key.ID, r.key.Private)
	}
	if err != nil {
		var verr gomatrixserverlib.EventValidationError
		if errors.As(err, &verr) && verr.Code == gomatrixserverlib.EventValidationTooLarge {
			return nil, mxhttp.TooLarge("The event is larger than %d bytes", maxPDUBytes)
		}
		return nil, mxhttp.BadJSON("Invalid event: %v", err)
	}
	return pdu, nil
}

// fillPrevState records the replaced state event for unsigned.prev_content.
func (r *Rooms) fillPrevState(ctx context.Context, tx *sql.Tx, ev *Event, oldID string, pending map[string]*Event) error {
	old, ok := pending[oldID]
	if !ok {
		evs, err := r.Events(ctx, tx, []string{oldID})
		if err != nil {
			return err
		}
		if old, ok = evs[oldID]; !ok {
			return nil
		}
	}
	content, sender := string(old.PDU.Content()), string(old.PDU.SenderID())
	ev.PrevContent, ev.PrevSender, ev.ReplacesState = &content, &sender, &oldID
	return nil
}

// fillRelation extracts content.m.relates_to for relations and threads.
func fillRelation(ev *Event) {
	rel := gjson.GetBytes(ev.PDU.Content(), "m\\.relates_to")
	if !rel.IsObject() {
		return
	}
	target, relType := rel.Get("event_id").String(), rel.Get("rel_type").String()
	if target == "" {
		return
	}
	ev.RelatesTo = &target
	if relType != "" {
		ev.RelType = &relType
	}
}

// applyRedaction marks the target redacted when the redaction is allowed to
// take effect: the target is in the same room, and (for versions where the
// check is deferred to display time) the redaction's sender may redact it.
func (r *Rooms) applyRedaction(ctx context.Context, tx *sql.Tx, roomID string, red gomatrixserverlib.PDU, pending map[string]*Event) error {
	targetID := red.Redacts()
	target, ok := pending[targetID]
	if !ok {
		evs, err := r.Events(ctx, tx, []string{targetID})
		if err != nil {
			return err
		}
		if target, ok = evs[targetID]; !ok {
			return nil // unknown target: applied if it ever arrives (not yet tracked)
		}
	}
	if target.RoomID != roomID {
		return nil
	}
	if ok, err := r.redactionTakesEffect(ctx, tx, roomID, red, target, pending); err != nil || !ok {
		return err
	}
	if err := storage.MarkRedacted(ctx, tx, targetID, red.EventID()); err != nil {
		return err
	}
	return r.db.UnindexForSearch(ctx, tx, targetID)
}

// authError is the client's error for an event the auth rules reject: 400
// when the library calls the content itself invalid (for example a room
// creator listed in the power levels of a version 12 room), else 403.
func authError(err error) error {
	if errors.Is(err, errOwnedMalformed) {
		return mxhttp.BadJSON("%v", err)
	}
	var invalid *gomatrixserverlib.EventValidationError
	if errors.As(err, &invalid) && invalid.Code == http.StatusBadRequest {
		return mxhttp.BadJSON("%v", err)
	}
	var invalidValue gomatrixserverlib.EventValidationError
	if errors.As(err, &invalidValue) && invalidValue.Code == http.StatusBadRequest {
		return mxhttp.BadJSON("%v", err)
	}
	return mxhttp.Forbidden("%v", err)
}
