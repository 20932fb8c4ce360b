package homeserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// relay carries, between the processes sharing one PostgreSQL database,
// what the others must hear of at once, over LISTEN/NOTIFY: sync wake-ups
// (the notifier's changes), cache invalidations (revoked access tokens,
// redacted events, changed push rules) and queued work for the process
// that sends (federation destinations, pushers). Each process publishes
// what happened in it and applies what the others published; its own
// notifications come back to it and are skipped by their sender ID.
//
// Messages are published after the change committed, by one goroutine
// that packs all waiting messages into as few notifications as fit
// PostgreSQL's payload limit (8000 bytes), sent in one statement. The
// receiving side has a connection of its own; when it was lost,
// notifications may have been missed, so after reconnecting a process
// wakes every waiting sync and drops its caches (resync).
type relay struct {
	db      *storage.DB
	log     *slog.Logger
	id      string // this process, as the sender of its notifications
	channel string
	// apply handles another process's message; resync runs after the
	// listening connection was re-established. Both are set before start.
	apply  func(ctx context.Context, m relayMessage)
	resync func(ctx context.Context)

	// gate is held while other processes' news must wait (tests hold it
	// to make this process lag behind the others).
	gate sync.Mutex

	// orderedApplied is the position of the last ordered message applied
	// here; orderedWait are the publishOrdered calls waiting for theirs.
	orderedMu      sync.Mutex
	orderedApplied int64
	orderedWait    map[int64]chan struct{}

	acksMu sync.Mutex
	acks   map[string]chan struct{} // revocation ID → one value per process that applied it

	mu      sync.Mutex
	pending []relayMessage
	flushed []chan struct{} // closed once the pending messages are sent
	closing bool
	signal  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// relayMessage is one piece of news; one field is set.
type relayMessage struct {
	Sync      *syncstream.Change `json:"s,omitempty"`
	Tokens    string             `json:"tok,omitempty"`   // user whose access tokens were revoked
	Redacted  []string           `json:"red,omitempty"`   // events redacted
	Rules     string             `json:"rules,omitempty"` // user whose push rules changed
	Dests     []string           `json:"fed,omitempty"`   // destinations with queued federation work
	PushUsers []string           `json:"push,omitempty"`  // users with queued pushes
	Typing    *relayedTyping     `json:"typ,omitempty"`
	Presence  *relayedPresence   `json:"pre,omitempty"`
	// Delayed says a delayed event was scheduled or restarted: the
	// leader's scheduler looks again.
	Delayed bool `json:"dly,omitempty"`
	// SteppedDown says the leader stopped leading: the others try now.
	SteppedDown bool `json:"down,omitempty"`
	// AckID asks every process to acknowledge the message once applied,
	// with an Ack of the same ID (see publishAcked).
	AckID string `json:"aid,omitempty"`
	Ack   string `json:"ack,omitempty"`
	// own: an ordered message (typing, presence) this process sent,
	// which it applies when it comes back like the others do.
	own bool
}

// relayedTyping is a Typing.Set made in another process.
type relayedTyping struct {
	Room    string `json:"r"`
	User    string `json:"u"`
	Typing  bool   `json:"t"`
	Timeout int64  `json:"ms"`
	Pos     int64  `json:"p,omitempty"`
}

// relayedPresence is a presence change made in another process.
type relayedPresence struct {
	User       string  `json:"u"`
	Presence   string  `json:"s"`
	StatusMsg  *string `json:"m,omitempty"`
	LastActive int64   `json:"la,omitempty"` // Unix milliseconds
	Active     bool    `json:"a,omitempty"`
	Pos        int64   `json:"p"`
}

func newRelayedPresence(c syncstream.PresenceChange) *relayedPresence {
	rp := &relayedPresence{User: c.User, Presence: c.State.Presence, StatusMsg: c.State.StatusMsg,
		Active: c.State.CurrentlyActive, Pos: c.State.Pos}
	if !c.State.LastActive.IsZero() {
		rp.LastActive = c.State.LastActive.UnixMilli()
	}
	return rp
}

func (rp *relayedPresence) change(own bool) syncstream.PresenceChange {
	st := syncstream.PresenceState{Presence: rp.Presence, StatusMsg: rp.StatusMsg, CurrentlyActive: rp.Active, Pos: rp.Pos}
	if rp.LastActive > 0 {
		st.LastActive = time.UnixMilli(rp.LastActive)
	}
	return syncstream.PresenceChange{User: rp.User, State: st, Own: own}
}

// relayPayload is one notification: messages from one process.
type relayPayload struct {
	From string            `json:"f"`
	Msgs []json.RawMessage `json:"m"`
}

// maxRelayPayload keeps notifications under PostgreSQL's 8000-byte limit.
const maxRelayPayload = 7900

// relayReconnectMax bounds the wait between attempts to listen again.
const relayReconnectMax = 10 * time.Second

// newRelay prepares the relay of db's processes (PostgreSQL only); start
// begins listening and publishing.
func newRelay(ctx context.Context, db *storage.DB, log *slog.Logger) (*relay, error) {
	key, err := db.ClusterKey(ctx)
	if err != nil {
		return nil, err
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	rctx, cancel := context.WithCancel(context.Background())
	return &relay{db: db, log: log, id: hex.EncodeToString(id[:]), channel: fmt.Sprintf("hearth_%08x", uint32(key)),
		signal: make(chan struct{}, 1), acks: map[string]chan struct{}{}, orderedWait: map[int64]chan struct{}{}, ctx: rctx, cancel: cancel}, nil
}

// start listens (the first connection is made before it returns, so that
// nothing published after start is missed) and starts the publisher.
func (r *relay) start(ctx context.Context) error {
	conn, err := r.listen(ctx)
	if err != nil {
		return err
	}
	r.wg.Add(2)
	go r.receive(conn)
	go r.publishLoop()
	return nil
}

// close sends what is still pending and stops.
func (r *relay) close() {
	r.mu.Lock()
	r.closing = true
	r.mu.Unlock()
	r.wake()
	r.cancel()
	r.wg.Wait()
}

// publish queues m for the other processes.
func (r *relay) publish(m relayMessage) { r.send(m, nil) }

// publishOrdered sends m (typing or presence) at the next ordered
// position: every process, this one too, applies it when it arrives, in
// the order of the positions (storage.DB.NotifyOrdered).
func (r *relay) publishOrdered(m relayMessage) error {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	var encodeErr error
	pos, err := r.db.NotifyOrdered(ctx, r.channel, func(pos int64) string {
		if m.Typing != nil {
			m.Typing.Pos = pos
		}
		if m.Presence != nil {
			m.Presence.Pos = pos
		}
		b, err := json.Marshal(m)
		if err == nil {
			b, err = json.Marshal(relayPayload{From: r.id, Msgs: []json.RawMessage{b}})
		}
		encodeErr = err
		return string(b)
	})
	if err == nil {
		err = encodeErr
	}
	if err != nil {
		r.log.Warn("ordering a typing or presence change failed; only this process shows it", "err", err)
		return err
	}
	// Answer once it is applied here too: what the client said is what
	// this process shows from then on.
	r.orderedMu.Lock()
	if r.orderedApplied >= pos {
		r.orderedMu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	r.orderedWait[pos] = ch
	r.orderedMu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
		r.orderedMu.Lock()
		delete(r.orderedWait, pos)
		r.orderedMu.Unlock()
	}
	return nil
}

// orderedDone records that the ordered messages up to pos are applied.
func (r *relay) orderedDone(pos int64) {
	r.orderedMu.Lock()
	defer r.orderedMu.Unlock()
	r.orderedApplied = max(r.orderedApplied, pos)
	for p, ch := range r.orderedWait {
		if p <= pos {
			close(ch)
			delete(r.orderedWait, p)
		}
	}
}

// ordered reports whether m is one of publishOrdered's messages.
func (m relayMessage) ordered() bool { return m.posOrdered() > 0 }

// posOrdered is the position of an ordered message, or 0.
func (m relayMessage) posOrdered() int64 {
	switch {
	case m.Typing != nil:
		return m.Typing.Pos
	case m.Presence != nil:
		return m.Presence.Pos
	}
	return 0
}

// relayAckTimeout bounds how long publishAcked waits for the others.
const relayAckTimeout = 2 * time.Second

// publishAcked sends m and waits until every other process listening has
// applied it (or relayAckTimeout passed): for revocations, which must
// have taken effect everywhere before the request that made them answers.
func (r *relay) publishAcked(m relayMessage) {
	ctx, cancel := context.WithTimeout(context.Background(), relayAckTimeout)
	defer cancel()
	listeners, err := r.db.Listeners(ctx, r.channel)
	if err != nil {
		r.log.Warn("counting the other processes", "err", err)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	m.AckID = hex.EncodeToString(id[:])
	acked := make(chan struct{}, max(listeners, 1))
	r.acksMu.Lock()
	r.acks[m.AckID] = acked
	r.acksMu.Unlock()
	defer func() {
		r.acksMu.Lock()
		delete(r.acks, m.AckID)
		r.acksMu.Unlock()
	}()
	sent := make(chan struct{})
	r.send(m, sent)
	select {
	case <-sent:
	case <-ctx.Done():
		return
	}
	for i := range listeners - 1 { // the others: this process listens too
		select {
		case <-acked:
		case <-ctx.Done():
			r.log.Warn("not every process acknowledged a revocation in time", "missing", listeners-1-i)
			return
		}
	}
}

func (r *relay) send(m relayMessage, done chan struct{}) {
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		if done != nil {
			close(done)
		}
		return
	}
	r.pending = append(r.pending, m)
	if done != nil {
		r.flushed = append(r.flushed, done)
	}
	r.mu.Unlock()
	r.wake()
}

func (r *relay) wake() {
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

// publishLoop sends pending messages until the relay closes.
func (r *relay) publishLoop() {
	defer r.wg.Done()
	for {
		<-r.signal
		r.mu.Lock()
		msgs, flushed, closing := r.pending, r.flushed, r.closing
		r.pending, r.flushed = nil, nil
		r.mu.Unlock()
		if len(msgs) > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := r.db.Notify(ctx, r.channel, r.pack(msgs)); err != nil {
				r.log.Warn("relaying changes to other processes failed; they may notice late", "err", err)
			}
			cancel()
		}
		for _, ch := range flushed {
			close(ch)
		}
		if closing {
			return
		}
	}
}

// pack encodes messages into payloads that fit a notification each,
// splitting a message whose lists are too long for one.
func (r *relay) pack(msgs []relayMessage) []string {
	head := `{"f":"` + r.id + `","m":[`
	var out []string
	cur := head
	for _, m := range msgs {
		for _, b := range r.encode(m, maxRelayPayload-len(head)-2) {
			if cur != head && len(cur)+1+len(b)+2 > maxRelayPayload {
				out = append(out, cur+"]}")
				cur = head
			}
			if cur != head {
				cur += ","
			}
			cur += string(b)
		}
	}
	if cur != head {
		out = append(out, cur+"]}")
	}
	return out
}

// encode returns m encoded in parts of at most limit bytes, halving its
// list until each part fits. IDs are at most 255 bytes, so one element
// always fits.
func (r *relay) encode(m relayMessage, limit int) [][]byte {
	b, err := json.Marshal(m)
	if err != nil {
		r.log.Error("encoding a relay message", "err", err)
		return nil
	}
	if len(b) <= limit {
		return [][]byte{b}
	}
	a, z := m, m
	switch {
	case m.Sync != nil && len(m.Sync.Users) > 1:
		h := len(m.Sync.Users) / 2
		sa, sz := *m.Sync, *m.Sync
		sa.Users, sz.Users = m.Sync.Users[:h], m.Sync.Users[h:]
		a.Sync, z.Sync = &sa, &sz
	case len(m.Redacted) > 1:
		h := len(m.Redacted) / 2
		a.Redacted, z.Redacted = m.Redacted[:h], m.Redacted[h:]
	case len(m.Dests) > 1:
		h := len(m.Dests) / 2
		a.Dests, z.Dests = m.Dests[:h], m.Dests[h:]
	case len(m.PushUsers) > 1:
		h := len(m.PushUsers) / 2
		a.PushUsers, z.PushUsers = m.PushUsers[:h], m.PushUsers[h:]
	default:
		r.log.Error("a relay message too large to send; dropped", "bytes", len(b))
		return nil
	}
	return append(r.encode(a, limit), r.encode(z, limit)...)
}

// listen opens a connection that listens on the relay's channel.
func (r *relay) listen(ctx context.Context) (*storage.SessionConn, error) {
	conn, err := r.db.ConnectSession(ctx)
	if err != nil {
		return nil, err
	}
	if err := conn.Listen(ctx, r.channel); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// receive applies other processes' notifications as they arrive,
// reconnecting with a growing delay when the connection fails.
func (r *relay) receive(conn *storage.SessionConn) {
	defer r.wg.Done()
	delay := 100 * time.Millisecond
	for {
		err := r.receiveFrom(conn)
		conn.Close()
		if r.ctx.Err() != nil {
			return
		}
		r.log.Warn("lost the connection that hears other processes; reconnecting", "err", err)
		for {
			select {
			case <-time.After(delay):
			case <-r.ctx.Done():
				return
			}
			delay = min(2*delay, relayReconnectMax)
			if conn, err = r.listen(r.ctx); err == nil {
				break
			}
			r.log.Warn("listening for other processes", "err", err, "retry_in", delay)
		}
		delay = 100 * time.Millisecond
		r.resync(r.ctx)
	}
}

// receiveFrom applies notifications until the connection fails or the
// relay closes.
func (r *relay) receiveFrom(conn *storage.SessionConn) error {
	for {
		payload, err := conn.WaitNotification(r.ctx)
		if err != nil {
			return err
		}
		var p relayPayload
		if err := json.Unmarshal([]byte(payload), &p); err != nil {
			r.log.Warn("an unreadable notification from another process", "err", err)
			continue
		}
		own := p.From == r.id
		r.gate.Lock()
		r.gate.Unlock() // a gate: only waits while held
		for _, raw := range p.Msgs {
			var m relayMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				r.log.Warn("an unreadable message from another process", "err", err)
				continue
			}
			if own {
				if !m.ordered() {
					continue
				}
				m.own = true
			}
			if m.Ack != "" {
				r.acksMu.Lock()
				if ch, ok := r.acks[m.Ack]; ok {
					select {
					case ch <- struct{}{}:
					default:
					}
				}
				r.acksMu.Unlock()
				continue
			}
			r.apply(r.ctx, m)
			if m.ordered() {
				r.orderedDone(m.posOrdered())
			}
			if m.AckID != "" {
				r.publish(relayMessage{Ack: m.AckID})
			}
		}
	}
}

// publishRedactions is the rooms observer that tells other processes of
// redacted events, which they drop from their event caches.
func (r *relay) publishRedactions(evs []*rooms.Event) {
	var ids []string
	for _, ev := range evs {
		if ev.Type == spec.MRoomRedaction && !ev.Outlier && !ev.Rejected {
			if target := ev.PDU.Redacts(); target != "" {
				ids = append(ids, target)
			}
		}
	}
	if len(ids) > 0 {
		r.publish(relayMessage{Redacted: ids})
	}
}

// startCluster joins the other processes sharing the PostgreSQL database:
// it listens to their news, then takes leadership if no one holds it.
func (s *Server) startCluster(ctx context.Context) error {
	var err error
	s.leader, err = newLeadership(ctx, s.DB, s.Log, func(ctx context.Context) {
		if err := s.Federation.Queue().Start(ctx); err != nil {
			s.Log.Error("starting the federation senders", "err", err)
		}
		if err := s.Push.StartSending(); err != nil {
			s.Log.Error("starting push delivery", "err", err)
		}
		s.AppServices.Start()
		s.Delayed.Start() // sends what came due meanwhile first
	}, func() {
		s.Federation.Queue().Stop()
		s.Push.StopSending()
		s.AppServices.Stop()
		s.Delayed.Stop()
	})
	if err != nil {
		return err
	}
	s.relay.apply = s.applyRelayed
	s.relay.resync = s.resync
	if err := s.relay.start(ctx); err != nil {
		return err
	}
	s.leader.start()
	return nil
}

// applyRelayed applies another process's news here.
func (s *Server) applyRelayed(ctx context.Context, m relayMessage) {
	switch {
	case m.Sync != nil:
		s.Notifier.Apply(ctx, *m.Sync)
		if m.Sync.Room != "" || m.Sync.Pos.Receipts > 0 {
			s.AppServices.Wake() // events or receipts another process committed; nothing unless leading
		}
	case m.Tokens != "":
		s.Accounts.ForgetTokens(m.Tokens)
	case len(m.Redacted) > 0:
		s.Rooms.ForgetEvents(m.Redacted...)
	case m.Rules != "":
		s.Push.ForgetRules(m.Rules)
	case len(m.Dests) > 0:
		s.Federation.Queue().Kick(m.Dests) // nothing unless leading
	case len(m.PushUsers) > 0:
		s.Push.PushesQueued(m.PushUsers) // nothing unless leading
	case m.SteppedDown:
		s.leader.tryNow()
	case m.Delayed:
		s.Delayed.Kick() // nothing unless leading
	case m.Typing != nil:
		s.Typing.Apply(syncstream.TypingChange{Room: m.Typing.Room, User: m.Typing.User, Typing: m.Typing.Typing,
			Timeout: time.Duration(m.Typing.Timeout) * time.Millisecond, Pos: m.Typing.Pos, Own: m.own})
	case m.Presence != nil:
		s.Presence.Apply(m.Presence.change(m.own))
	}
}

// resync makes up for news that may have been missed while the listening
// connection was down: every waiting sync looks in the database, caches
// start over, and a leader looks at all queued work.
func (s *Server) resync(ctx context.Context) {
	s.Accounts.ForgetTokens("")
	s.Rooms.ForgetEvents()
	s.Push.ForgetRules("")
	if pos, err := storedPositions(ctx, s.DB); err == nil {
		s.Notifier.WakeAll(pos)
	} else {
		s.Log.Warn("reading stream positions after reconnecting", "err", err)
	}
	if dests, err := storage.QueueDestinations(ctx, s.DB.Read()); err == nil {
		s.Federation.Queue().Kick(dests)
	}
	if queued, err := storage.PushersWithQueue(ctx, s.DB.Read()); err == nil {
		users := map[string]bool{}
		var list []string
		for _, userID := range queued {
			if !users[userID] {
				users[userID] = true
				list = append(list, userID)
			}
		}
		s.Push.PushesQueued(list)
	}
	s.AppServices.Wake()
}
