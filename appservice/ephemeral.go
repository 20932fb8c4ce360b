package appservice

import (
	"context"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Pushing ephemeral data (Application Service API, v1.13): a service whose
// registration says receive_ephemeral gets, in the ephemeral array of its
// transactions, m.receipt and m.typing of rooms it is interested in (as
// for events: the room is in its namespaces or has one of its users
// joined), with room_id, and m.presence of users in its namespaces or
// sharing a room with one of its users. Receipts come from the receipts
// table after the service's receipt position, so none is lost across
// failures and restarts; typing and presence live in memory (syncstream)
// and are queued here as they change. Once a transaction is made its
// ephemeral array is stored with it and resent unchanged until accepted.

// TypingSource is who types in a room now.
type TypingSource interface {
	Users(roomID string) ([]string, int64)
}

// PresenceSource is a user's presence now.
type PresenceSource interface {
	Get(userID string) syncstream.PresenceState
}

// pending is a typing change of a room or a presence change of a user,
// queued for a service; the transaction carries the state when it is made.
type pending struct {
	typing bool   // else presence
	id     string // room or user ID
}

// maxTxnReceipts bounds the receipts of one transaction.
const maxTxnReceipts = 100

// SetEphemeralSources gives the pusher the typing and presence state to
// read when a change it was told of (TypingChanged, PresenceChanged) goes
// out. Call it before the first change.
func (p *Pusher) SetEphemeralSources(t TypingSource, pr PresenceSource) {
	p.typing, p.present = t, pr
}

// TypingChanged queues a room's typing state for every service that
// takes ephemeral data, and wakes the senders.
func (p *Pusher) TypingChanged(roomID string) { p.queue(pending{typing: true, id: roomID}) }

// PresenceChanged queues a user's presence likewise.
func (p *Pusher) PresenceChanged(userID string) { p.queue(pending{id: userID}) }

func (p *Pusher) queue(item pending) {
	if p == nil {
		return
	}
	// Only a running sender drains its queue: a process that does not
	// lead keeps none (the leader hears of typing through the relay).
	p.termMu.Lock()
	running := p.term != nil
	p.termMu.Unlock()
	if !running {
		return
	}
	p.ephMu.Lock()
	queued := false
	for _, reg := range p.registry.All() {
		if _, ok := p.wake[reg.ID]; !ok || !reg.ReceiveEphemeral {
			continue
		}
		q := p.queued[reg.ID]
		dup := false
		for _, it := range q {
			dup = dup || it == item
		}
		if !dup {
			p.queued[reg.ID] = append(q, item) // the state is read when sent
		}
		queued = true
	}
	p.ephMu.Unlock()
	if queued {
		p.Wake()
	}
}

// take removes and returns a service's queued changes.
func (p *Pusher) take(asID string) []pending {
	p.ephMu.Lock()
	defer p.ephMu.Unlock()
	q := p.queued[asID]
	delete(p.queued, asID)
	return q
}

// requeue puts back changes whose transaction could not be recorded.
func (p *Pusher) requeue(asID string, items []pending) {
	if len(items) == 0 {
		return
	}
	p.ephMu.Lock()
	p.queued[asID] = append(items, p.queued[asID]...)
	p.ephMu.Unlock()
}

// ephemeral makes a service's next ephemeral array: the receipts after
// from that concern it, in stream order, then the queued typing and
// presence changes that do, in the order they came. receiptTo is the
// newest receipt position read; taken are the queued changes used up.
func (p *Pusher) ephemeral(ctx context.Context, reg *Registration, from int64) (out []map[string]any, receiptTo int64, taken []pending, err error) {
	receiptTo = from
	interest := map[string]bool{}
	inRoom := func(roomID string) (bool, error) {
		if v, ok := interest[roomID]; ok {
			return v, nil
		}
		v, err := p.interestedInRoom(ctx, reg, roomID)
		interest[roomID] = v
		return v, err
	}
	receipts, err := p.db.ReceiptsAfter(ctx, from, maxTxnReceipts)
	if err != nil {
		return nil, from, nil, err
	}
	for _, rc := range receipts {
		receiptTo = rc.StreamPos
		// Private receipts go only to the service owning their user.
		if rc.Type == "m.read.private" && !reg.OwnsUser(rc.UserID, p.registry.serverName) {
			continue
		}
		ok, err := inRoom(rc.RoomID)
		if err != nil {
			return nil, from, nil, err
		}
		if !ok {
			continue
		}
		entry := map[string]any{"ts": rc.TS}
		if rc.ThreadID != "" {
			entry["thread_id"] = rc.ThreadID
		}
		out = append(out, map[string]any{"type": "m.receipt", "room_id": rc.RoomID,
			"content": map[string]any{rc.EventID: map[string]any{rc.Type: map[string]any{rc.UserID: entry}}}})
	}
	taken = p.take(reg.ID)
	for _, it := range taken {
		var ev map[string]any
		if it.typing {
			ev, err = p.typingEvent(it.id, inRoom)
		} else {
			ev, err = p.presenceEvent(ctx, reg, it.id, inRoom)
		}
		if err != nil {
			p.requeue(reg.ID, taken)
			return nil, from, nil, err
		}
		if ev != nil {
			out = append(out, ev)
		}
	}
	return out, receiptTo, taken, nil
}

func (p *Pusher) typingEvent(roomID string, inRoom func(string) (bool, error)) (map[string]any, error) {
	if p.typing == nil {
		return nil, nil
	}
	if ok, err := inRoom(roomID); err != nil || !ok {
		return nil, err
	}
	users, _ := p.typing.Users(roomID)
	if users == nil {
		users = []string{}
	}
	return map[string]any{"type": "m.typing", "room_id": roomID, "content": map[string]any{"user_ids": users}}, nil
}

// presenceEvent is the user's m.presence when the service owns the user
// or one of its users shares a room with them.
func (p *Pusher) presenceEvent(ctx context.Context, reg *Registration, userID string, inRoom func(string) (bool, error)) (map[string]any, error) {
	if p.present == nil {
		return nil, nil
	}
	concerned := reg.OwnsUser(userID, p.registry.serverName)
	if !concerned {
		joined, err := storage.RoomsOfUser(ctx, p.db.Read(), userID, spec.Join)
		if err != nil {
			return nil, err
		}
		for _, m := range joined {
			f, err := p.facts(ctx, reg, &rooms.Event{Event: storage.Event{RoomID: m.RoomID}}, roomCache{})
			if err != nil {
				return nil, err
			}
			if len(f.members) > 0 {
				concerned = true
				break
			}
		}
	}
	if !concerned {
		return nil, nil
	}
	st := p.present.Get(userID)
	content := map[string]any{"presence": st.Presence}
	if !st.LastActive.IsZero() {
		content["last_active_ago"] = time.Since(st.LastActive).Milliseconds()
	}
	if st.StatusMsg != nil {
		content["status_msg"] = *st.StatusMsg
	}
	if st.Presence == "online" {
		content["currently_active"] = st.CurrentlyActive
	}
	return map[string]any{"type": "m.presence", "sender": userID, "content": content}, nil
}

// interestedInRoom applies the events' interest rules to a room as it is
// now: in the rooms namespaces, one of the service's users joined, or an
// alias in its aliases namespaces.
func (p *Pusher) interestedInRoom(ctx context.Context, reg *Registration, roomID string) (bool, error) {
	if matchAny(reg.Namespaces.Rooms, roomID, false) {
		return true, nil
	}
	f, err := p.facts(ctx, reg, &rooms.Event{Event: storage.Event{RoomID: roomID}}, roomCache{})
	if err != nil {
		return false, err
	}
	if len(f.members) > 0 {
		return true, nil
	}
	for _, a := range f.aliases {
		if reg.OwnsAlias(a) {
			return true, nil
		}
	}
	return false, nil
}
