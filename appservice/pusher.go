package appservice

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/backoff"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// maxTxnEvents bounds the events read per step and so the events of one
// transaction.
const maxTxnEvents = 100

// Pusher sends room events to application services (Application Service
// API, Pushing events): one goroutine per service with a URL, each
// walking the event stream from its stored position, so delivery is
// ordered per service and durable (the events table is the queue; the
// position and the transaction in flight are in appservice_streams). A
// transaction the service does not accept with a 2xx is retried, with the
// same ID and events, after an exponential backoff.
//
// With several processes sharing one PostgreSQL only the leader sends
// (Start, Stop): two senders of one service would number and send their
// transactions over each other. The others wake it through the relay.
//
// Requests go to the configured URL whatever its address: bridges usually
// run next to the server on a private or loopback address, and the URL
// comes from the operator's registration file, not from a user.
type Pusher struct {
	db       *storage.DB
	rooms    *rooms.Rooms
	registry *Registry
	log      *slog.Logger
	client   *http.Client

	wake map[string]chan struct{} // per service id

	// Ephemeral data (typing, presence) waiting for a transaction, per
	// service that takes it; see ephemeral.go.
	ephMu   sync.Mutex
	queued  map[string][]pending
	typing  TypingSource
	present PresenceSource

	mu                 sync.Mutex
	minDelay, maxDelay time.Duration

	ctx    context.Context // the Pusher's lifetime; sending terms derive from it
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// term is the running sending term's cancel, nil when the senders do
	// not run; termMu orders Start, Stop and Close.
	termMu sync.Mutex
	term   context.CancelFunc
}

// NewPusher starts a sender for every service with a URL, unless standby
// (another process sharing the database may be sending: Start when this
// one leads). A service seen for the first time starts at the current end
// of the stream.
func NewPusher(ctx context.Context, db *storage.DB, rs *rooms.Rooms, registry *Registry, log *slog.Logger, standby bool) (*Pusher, error) {
	runCtx, cancel := context.WithCancel(context.Background())
	p := &Pusher{db: db, rooms: rs, registry: registry, log: log, client: &http.Client{Timeout: 30 * time.Second},
		wake: map[string]chan struct{}{}, queued: map[string][]pending{}, minDelay: 2 * time.Second, maxDelay: 5 * time.Minute, ctx: runCtx, cancel: cancel}
	head, err := storage.MaxStreamPos(ctx, db.Read())
	if err != nil {
		cancel()
		return nil, err
	}
	receiptHead, err := db.MaxReceiptPos(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	for _, reg := range registry.All() {
		if reg.PushURL() == "" {
			continue
		}
		if err := db.StartAppServiceStream(ctx, reg.ID, head, receiptHead); err != nil {
			cancel()
			return nil, err
		}
		if !reg.ReceiveEphemeral {
			if err := db.SkipAppServiceReceipts(ctx, reg.ID, receiptHead); err != nil {
				cancel()
				return nil, err
			}
		}
		p.wake[reg.ID] = make(chan struct{}, 1)
	}
	if !standby {
		p.Start()
	}
	return p, nil
}

// Start runs the senders (if they do not run): at start, or when this
// process takes over from another sharing the database. Each goes on
// from its service's stored position and transaction in flight.
func (p *Pusher) Start() {
	p.termMu.Lock()
	defer p.termMu.Unlock()
	if p.term != nil || p.ctx.Err() != nil {
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	p.term = cancel
	for _, reg := range p.registry.All() {
		if w, ok := p.wake[reg.ID]; ok {
			p.wg.Add(1)
			go p.run(ctx, reg, w)
		}
	}
}

// Stop stops the senders and returns once none runs; what is not yet
// delivered stays owed, to Start or another process.
func (p *Pusher) Stop() {
	p.termMu.Lock()
	defer p.termMu.Unlock()
	if p.term != nil {
		p.term()
		p.term = nil
	}
	p.wg.Wait()
}

// Close stops the senders; what is not yet delivered stays owed.
func (p *Pusher) Close() {
	p.cancel()
	p.Stop()
}

// SetBackoff changes the retry delays (tests use milliseconds).
func (p *Pusher) SetBackoff(minDelay, maxDelay time.Duration) {
	p.mu.Lock()
	p.minDelay, p.maxDelay = minDelay, maxDelay
	p.mu.Unlock()
}

func (p *Pusher) backoff(failures int) time.Duration {
	p.mu.Lock()
	lo, hi := p.minDelay, p.maxDelay
	p.mu.Unlock()
	return backoff.Delay(failures, lo, hi)
}

// Observe is the rooms.Observer: it wakes every sender, which reads the
// committed events from the store itself.
func (p *Pusher) Observe([]*rooms.Event) { p.Wake() }

// Wake makes every sender look for new events: for events committed here
// (Observe) or by another process sharing the database. A sender that
// does not run looks when it starts.
func (p *Pusher) Wake() {
	if p == nil {
		return
	}
	for _, w := range p.wake {
		select {
		case w <- struct{}{}:
		default:
		}
	}
}

// run is one service's sender, until ctx (its sending term) ends.
func (p *Pusher) run(ctx context.Context, reg *Registration, wake chan struct{}) {
	defer p.wg.Done()
	failures := 0
	var cur cursor
	for {
		progressed, err := p.step(ctx, reg, &cur)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			delay := p.backoff(failures)
			p.log.Warn("application service transaction failed; retrying", "appservice", reg.ID, "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		failures = 0
		if progressed {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		}
	}
}

// saveSkippedEvery bounds how often a position advanced only past events
// of no interest to the service is written: such a write is not needed
// for correctness (after a restart those events are judged again), so an
// idle bridge does not add a write to every message on the server.
const saveSkippedEvery = 10 * time.Second

// cursor is a sender's position beyond the stored one: events up to
// skipped were of no interest.
type cursor struct {
	skipped int64
	saved   time.Time
}

// step sends the transaction in flight, or makes the next one from the
// events after the delivered position and, for a service that takes
// ephemeral data, the receipts after its receipt position and the typing
// and presence changes queued for it. It reports whether it advanced.
func (p *Pusher) step(ctx context.Context, reg *Registration, cur *cursor) (bool, error) {
	st, err := p.db.GetAppServiceStream(ctx, reg.ID)
	if err != nil {
		return false, err
	}
	if !st.InFlight() {
		from := max(st.DeliveredPos, cur.skipped)
		chosen, to, err := p.chooseEvents(ctx, reg, from)
		if err != nil {
			return false, err
		}
		var eph []map[string]any
		receiptTo := st.ReceiptPos
		var taken []pending
		if reg.ReceiveEphemeral {
			if eph, receiptTo, taken, err = p.ephemeral(ctx, reg, st.ReceiptPos); err != nil {
				return false, err
			}
		}
		if len(chosen) == 0 && len(eph) == 0 {
			if receiptTo > st.ReceiptPos {
				// Receipts of no interest: passed at once, the write is rare.
				cur.skipped, cur.saved = to, time.Now()
				return true, p.db.AdvanceAppServiceStream(ctx, reg.ID, to, receiptTo)
			}
			cur.skipped = to
			if time.Since(cur.saved) < saveSkippedEvery {
				return to > from, nil
			}
			cur.saved = time.Now()
			return to > from, p.db.AdvanceAppServiceStream(ctx, reg.ID, to, st.ReceiptPos)
		}
		eJSON := json.RawMessage("[]")
		if len(eph) > 0 {
			if eJSON, err = json.Marshal(eph); err != nil {
				return false, err
			}
		}
		st.TxnID++
		st.TxnToPos, st.TxnEvents, st.TxnEphemeral, st.TxnReceipt = to, chosen, eJSON, receiptTo
		if err := p.db.BeginAppServiceTxn(ctx, reg.ID, st.TxnID, to, chosen, eJSON, receiptTo); err != nil {
			p.requeue(reg.ID, taken)
			return false, err
		}
	}
	byID, err := p.rooms.Events(ctx, p.db.Read(), st.TxnEvents)
	if err != nil {
		return false, err
	}
	events := make([]rooms.ClientEvent, 0, len(st.TxnEvents))
	for _, id := range st.TxnEvents {
		if ev, ok := byID[id]; ok {
			events = append(events, ev.ClientEvent(rooms.Viewer{}, nil))
		}
	}
	if err := p.sendTxn(ctx, reg, st.TxnID, events, st.TxnEphemeral); err != nil {
		return false, err
	}
	return true, p.db.AdvanceAppServiceStream(ctx, reg.ID, st.TxnToPos, st.TxnReceipt)
}

// chooseEvents reads the events after from and keeps those of interest
// to the service; to is the newest position read.
func (p *Pusher) chooseEvents(ctx context.Context, reg *Registration, from int64) (chosen []string, to int64, err error) {
	to = from
	ids, err := storage.EventIDsAfter(ctx, p.db.Read(), from, maxTxnEvents)
	if err != nil || len(ids) == 0 {
		return nil, to, err
	}
	byID, err := p.rooms.Events(ctx, p.db.Read(), ids)
	if err != nil {
		return nil, to, err
	}
	cache := roomCache{}
	for _, id := range ids {
		ev, ok := byID[id]
		if !ok {
			continue
		}
		to = max(to, ev.StreamPos)
		if ev.Rejected || ev.SoftFailed {
			continue
		}
		interested, err := p.interested(ctx, reg, ev, cache)
		if err != nil {
			return nil, to, err
		}
		if interested {
			chosen = append(chosen, id)
		}
	}
	return chosen, to, nil
}

// sendTxn is PUT /_matrix/app/v1/transactions/{txnId} with the hs_token.
func (p *Pusher) sendTxn(ctx context.Context, reg *Registration, txnID int64, events []rooms.ClientEvent, ephemeral json.RawMessage) error {
	txn := map[string]any{"events": events}
	if len(ephemeral) > 0 && string(ephemeral) != "[]" {
		txn["ephemeral"] = ephemeral // omitted when empty, as the spec allows
	}
	body, err := json.Marshal(txn)
	if err != nil {
		return err
	}
	_, err = p.call(ctx, reg, "PUT", "/_matrix/app/v1/transactions/"+strconv.FormatInt(txnID, 10), body)
	return err
}

// errStatus is a non-2xx answer of the service.
type errStatus struct {
	status int
	body   []byte
}

func (e *errStatus) Error() string { return fmt.Sprintf("status %d: %.200s", e.status, e.body) }

// call makes one request to the service with its hs_token and returns the
// body of a 2xx answer.
func (p *Pusher) call(ctx context.Context, reg *Registration, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, reg.PushURL()+path, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("appservice %s: %w", reg.ID, err)
	}
	req.Header.Set("Authorization", "Bearer "+reg.HSToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, &errStatus{status: resp.StatusCode, body: data}
	}
	return data, nil
}

// roomCache holds, for one step, what interest needs of each room state
// (by snapshot ID).
type roomCache map[int64]*roomFacts

type roomFacts struct {
	members []string // joined users in the service's namespaces
	aliases []string // canonical alias and alt_aliases, local aliases
}

// interested applies the spec's interest rules: the event's sender or
// member state_key is in the service's users namespaces, the room ID is
// in its rooms namespaces, the room has a joined member in its users
// namespaces,
// or one of the room's aliases is in its aliases namespaces. Membership
// is judged by the room's state at the event, not by its state when the
// sender gets to it, so a service late by a backoff is not sent what
// happened before its users arrived.
func (p *Pusher) interested(ctx context.Context, reg *Registration, ev *rooms.Event, cache roomCache) (bool, error) {
	sn := p.registry.serverName
	if reg.OwnsUser(ev.Sender, sn) {
		return true, nil
	}
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && reg.OwnsUser(*ev.StateKey, sn) {
		return true, nil
	}
	if matchAny(reg.Namespaces.Rooms, ev.RoomID, false) {
		return true, nil
	}
	facts, err := p.facts(ctx, reg, ev, cache)
	if err != nil {
		return false, err
	}
	if len(facts.members) > 0 {
		return true, nil
	}
	for _, a := range facts.aliases {
		if reg.OwnsAlias(a) {
			return true, nil
		}
	}
	return false, nil
}

func (p *Pusher) facts(ctx context.Context, reg *Registration, ev *rooms.Event, cache roomCache) (*roomFacts, error) {
	if f, ok := cache[ev.SnapshotAfter]; ok && ev.SnapshotAfter != 0 {
		return f, nil
	}
	var st rooms.State
	var err error
	if ev.SnapshotAfter != 0 {
		st, err = p.rooms.StateAt(ctx, ev.SnapshotAfter)
	} else {
		st, err = p.rooms.CurrentState(ctx, ev.RoomID)
	}
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	f := &roomFacts{}
	var memberIDs []string
	for k, id := range st {
		if k.Type == spec.MRoomMember && reg.OwnsUser(k.StateKey, p.registry.serverName) {
			memberIDs = append(memberIDs, id)
		}
	}
	if len(memberIDs) > 0 {
		members, err := p.rooms.Events(ctx, p.db.Read(), memberIDs)
		if err != nil {
			return nil, err
		}
		for _, m := range members {
			if m.Membership != nil && *m.Membership == spec.Join {
				f.members = append(f.members, *m.StateKey)
			}
		}
	}
	if len(reg.Namespaces.Aliases) > 0 {
		if f.aliases, err = storage.AliasesOfRoom(ctx, p.db.Read(), ev.RoomID); err != nil {
			return nil, err
		}
		if id, ok := st[storage.StateKey{Type: spec.MRoomCanonicalAlias}]; ok {
			if ev, err := p.rooms.Event(ctx, id); err == nil {
				var c struct {
					Alias      string   `json:"alias"`
					AltAliases []string `json:"alt_aliases"`
				}
				if json.Unmarshal(ev.PDU.Content(), &c) == nil {
					f.aliases = append(append(f.aliases, c.Alias), c.AltAliases...)
				}
			}
		}
	}
	cache[ev.SnapshotAfter] = f
	return f, nil
}

// Ping is POST /_matrix/app/v1/ping to the service with the given
// transaction ID; it returns how long the service took, or the error
// the client-server ping endpoint reports.
func (p *Pusher) Ping(ctx context.Context, reg *Registration, txnID string) (time.Duration, error) {
	body := []byte("{}")
	if txnID != "" {
		body, _ = json.Marshal(map[string]string{"transaction_id": txnID})
	}
	start := time.Now()
	_, err := p.call(ctx, reg, "POST", "/_matrix/app/v1/ping", body)
	return time.Since(start), err
}

// PingError maps a failed ping to the spec's error kinds: the service's
// status and body, a timeout, or no connection.
func PingError(err error) (errcode string, status int, body []byte) {
	var es *errStatus
	if errors.As(err, &es) {
		return "M_BAD_STATUS", es.status, es.body
	}
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return "M_CONNECTION_TIMEOUT", 0, nil
	}
	return "M_CONNECTION_FAILED", 0, nil
}

// QueryUser asks the services whose users namespaces hold userID whether
// the user exists (GET /_matrix/app/v1/users/{userId}); a service that
// answers 200 has created the user by then. It reports whether one did.
func (p *Pusher) QueryUser(ctx context.Context, userID string) bool {
	return p.query(ctx, "/_matrix/app/v1/users/"+url.PathEscape(userID), func(reg *Registration) bool {
		return matchAny(reg.Namespaces.Users, userID, false)
	})
}

// QueryAlias asks the services whose aliases namespaces hold alias
// whether it exists (GET /_matrix/app/v1/rooms/{roomAlias}); a service
// that answers 200 has created the room and alias by then.
func (p *Pusher) QueryAlias(ctx context.Context, alias string) bool {
	return p.query(ctx, "/_matrix/app/v1/rooms/"+url.PathEscape(alias), func(reg *Registration) bool {
		return reg.OwnsAlias(alias)
	})
}

func (p *Pusher) query(ctx context.Context, path string, owns func(*Registration) bool) bool {
	if p == nil {
		return false
	}
	for _, reg := range p.registry.All() {
		if reg.PushURL() == "" || !owns(reg) {
			continue
		}
		var answer map[string]any
		if p.get(ctx, reg, path, &answer) {
			return true
		}
	}
	return false
}

// isNotFound reports whether err is the service's 404.
func isNotFound(err error) bool {
	var es *errStatus
	return errors.As(err, &es) && es.status == http.StatusNotFound
}
