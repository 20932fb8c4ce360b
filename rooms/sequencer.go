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
	// built is the event already built (a version 12 m.room.create, whose
	// ID names the room before anything is stored).
	built gomatrixserverlib.PDU
}

// Send builds, authorises and persists local events in one room, in order,
// in one transaction: either all are committed or none.
func (r *Rooms) Send(ctx context.Context, roomID string, protos ...Proto) ([]*Event, error) {
	if len(protos) == 1 && protos[0].TxnID != "" {
		if ev, err := r.txnEvent(ctx, r.db.Read(), protos[0]); err == nil || !errors.Is(err, storage.ErrNotFound) {
			return []*Event{ev}, err
		}
	}
	unlock := r.locks.lock(roomID)
	defer unlock()
	var out []*Event
	var snaps []*snapshot
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		room, err := r.db.LockRoom(ctx, tx, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("Unknown room %s", roomID)
		}
		if err != nil {
			return err
		}
		if len(protos) == 1 && protos[0].TxnID != "" {
			// Another request with the same transaction may have won the race.
			if ev, err := r.txnEvent(ctx, tx, protos[0]); err == nil || !errors.Is(err, storage.ErrNotFound) {
				out = []*Event{ev}
				return err
			}
		}
		out, snaps, err = r.appendLocal(ctx, tx, &room, protos)
		return err
	})
	if err != nil {
		return nil, err
	}
	r.committed(out, snaps)
	return out, nil
}

// committed updates caches and tells observers once a transaction is durable.
func (r *Rooms) committed(evs []*Event, snaps []*snapshot) {
	r.cache(evs, snaps)
	r.notify(evs)
}

// cache puts committed events and snapshots into the caches.
func (r *Rooms) cache(evs []*Event, snaps []*snapshot) {
	for _, s := range snaps {
		r.snapshots.put(s.id, s)
	}
	for _, ev := range evs {
		if ev.Type == spec.MRoomRedaction {
			if target := ev.PDU.Redacts(); target != "" {
				r.pdus.remove(target)
			}
		}
		r.pdus.put(ev.EventID, ev)
	}
}

func (r *Rooms) txnEvent(ctx context.Context, q storage.Reader, p Proto) (*Event, error) {
	id, err := storage.LookupTxn(ctx, q, p.Sender, p.Device, p.TxnScope, p.TxnID)
	if err != nil {
		return nil, err
	}
	evs, err := r.Events(ctx, q, []string{id})
	if err != nil {
		return nil, err
	}
	if ev, ok := evs[id]; ok {
		return ev, nil
	}
	return nil, fmt.Errorf("transaction %s names missing event %s", p.TxnID, id)
}

// appendLocal builds each proto on top of the room's head and persists it.
// room is updated in place to the new head.
func (r *Rooms) appendLocal(ctx context.Context, tx *sql.Tx, room *storage.Room, protos []Proto) ([]*Event, []*snapshot, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, nil, err
	}
	cur, err := r.snapshotState(ctx, tx, room.CurrentSnapshot)
	if err != nil {
		return nil, nil, err
	}
	if err := r.db.LockEventStream(ctx, tx); err != nil {
		return nil, nil, err
	}
	pending := map[string]*Event{}
	var out []*Event
	var snaps []*snapshot
	now := time.Now()
	for _, p := range protos {
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
						return nil, nil, err
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
		proto := &gomatrixserverlib.ProtoEvent{
			SenderID: p.Sender, RoomID: room.RoomID, Type: p.Type, StateKey: p.StateKey,
			PrevEvents: append([]string{}, prev...), AuthEvents: []string{},
			Depth: room.MaxDepth + 1, Content: spec.RawJSON(content), Redacts: p.Redacts, Version: ver,
		}
		provider, err := r.authProvider(ctx, tx, cur.state, proto, pending)
		if err != nil {
			return nil, nil, fmt.Errorf("loading auth events: %w", err)
		}
		pdu := p.built
		if pdu == nil {
			builder := ver.NewEventBuilderFromProtoEvent(proto)
			if err := builder.AddAuthEvents(provider); err != nil {
				return nil, nil, fmt.Errorf("selecting auth events: %w", err)
			}
			if pdu, err = builder.Build(now, r.serverName, r.key.ID, r.key.Private); err != nil {
				return nil, nil, mxhttp.BadJSON("Invalid event: %v", err)
			}
		}
		if len(pdu.JSON()) > maxPDUBytes {
			return nil, nil, mxhttp.TooLarge("The event is larger than %d bytes", maxPDUBytes)
		}
		if err := gomatrixserverlib.Allowed(pdu, provider, userIDForSender); err != nil {
			return nil, nil, authError(err)
		}
		pdu.EventID()
		ev := &Event{PDU: pdu, Event: storage.Event{
			EventID: pdu.EventID(), RoomID: room.RoomID, Type: pdu.Type(), StateKey: pdu.StateKey(),
			Sender: string(pdu.SenderID()), Depth: pdu.Depth(), OriginTS: int64(pdu.OriginServerTS()),
			SnapshotBefore: cur.id, SnapshotAfter: cur.id, JSON: pdu.JSON(),
		}}
		if p.TxnID != "" {
			ev.SenderDevice, ev.TxnID = &p.Device, &p.TxnID
		}
		fillRelation(ev)
		if pdu.StateKey() != nil {
			k := storage.StateKey{Type: pdu.Type(), StateKey: *pdu.StateKey()}
			if pdu.Type() == spec.MRoomMember {
				if m, err := pdu.Membership(); err == nil {
					ev.Membership = &m
				}
			}
			if old, ok := cur.state[k]; ok {
				if err := r.fillPrevState(ctx, tx, ev, old, pending); err != nil {
					return nil, nil, err
				}
			}
			next, err := r.newSnapshot(ctx, tx, room.RoomID, cur, State{k: ev.EventID})
			if err != nil {
				return nil, nil, err
			}
			snaps = append(snaps, next)
			cur = next
			ev.SnapshotAfter = cur.id
			if err := storage.SetCurrentState(ctx, tx, room.RoomID, k, ev.EventID, ev.Membership); err != nil {
				return nil, nil, err
			}
		}
		if ev.StreamPos, err = storage.InsertEvent(ctx, tx, ev.Event); err != nil {
			return nil, nil, err
		}
		if p.TxnID != "" {
			if err := storage.InsertTxn(ctx, tx, p.Sender, p.Device, p.TxnScope, p.TxnID, ev.EventID, now.UnixMilli()); err != nil {
				return nil, nil, err
			}
		}
		if pdu.Type() == spec.MRoomRedaction && pdu.Redacts() != "" {
			if err := r.applyRedaction(ctx, tx, room.RoomID, pdu, pending); err != nil {
				return nil, nil, err
			}
		}
		pending[ev.EventID] = ev
		out = append(out, ev)
		room.Extremities = []string{ev.EventID}
		room.MaxDepth = pdu.Depth()
		room.CurrentSnapshot = cur.id
	}
	if err := storage.UpdateRoomHead(ctx, tx, room.RoomID, room.Extremities, room.MaxDepth, room.CurrentSnapshot); err != nil {
		return nil, nil, err
	}
	return out, snaps, nil
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
	return storage.MarkRedacted(ctx, tx, targetID, red.EventID())
}

// authError is the client's error for an event the auth rules reject: 400
// when the library calls the content itself invalid (for example a room
// creator listed in the power levels of a version 12 room), else 403.
func authError(err error) error {
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
