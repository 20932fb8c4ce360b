package rtc

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Delayed events (MSC4140): a client schedules an event to be sent later;
// the scheduler sends it when its delay passes, through rooms.Rooms.Send
// like any local send, unless the client restarts the timer, sends it at
// once or cancels it first.
//
// Every scheduled event is a row of delayed_events, so none is lost by a
// restart. Sending one takes three steps: claim the row (scheduled →
// sending, in one UPDATE, which one process alone wins), send the event
// with transaction ID = delay_id in the "delayed" transaction scope,
// finalising the row (sent, with the event ID) in the event's own
// transaction (a failed send is finalised after). A process that dies between
// the claim and the end leaves the row in sending; the next scheduler to
// start (this process after a restart, or the process that takes over
// leadership) takes such claims again and sends again, and the room core
// answers the first event for a transaction already used (client_txns is
// written in the event's own transaction), so the event is sent once.
//
// The scheduler runs on one process only: the leader when several share a
// PostgreSQL database (homeserver/leader.go), the only one on SQLite. The
// management actions (send, cancel, restart) and scheduling run in any
// process.

// TxnScope is the room core's transaction scope of delayed event sends.
const TxnScope = "delayed"

// Delayed is the delayed events service of one homeserver process.
type Delayed struct {
	db    *storage.DB
	rooms *rooms.Rooms
	log   *slog.Logger
	// maxDelayMS is the longest delay allowed; 0: delayed events are off.
	maxDelayMS int64
	// poll bounds how long the scheduler sleeps without looking at the
	// store: other processes may have scheduled events.
	poll time.Duration
	// Scheduled, when set, is told that this process scheduled or
	// restarted a delayed event (the cluster relays it to the leader).
	Scheduled func()

	kick chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Options configure a Delayed.
type Options struct {
	// MaxDelay is the longest delay a client may ask for; 0 turns
	// delayed events off.
	MaxDelay time.Duration
	// Poll bounds the scheduler's sleep (default 30 s; with several
	// processes, 1 s).
	Poll time.Duration
}

// NewDelayed returns the delayed events service; Start runs its scheduler.
func NewDelayed(db *storage.DB, r *rooms.Rooms, log *slog.Logger, opts Options) *Delayed {
	if opts.Poll <= 0 {
		opts.Poll = 30 * time.Second
	}
	return &Delayed{db: db, rooms: r, log: log, maxDelayMS: opts.MaxDelay.Milliseconds(), poll: opts.Poll,
		kick: make(chan struct{}, 1)}
}

// Enabled reports whether clients may schedule delayed events.
func (d *Delayed) Enabled() bool { return d != nil && d.maxDelayMS > 0 }

// MaxDelayMS is the longest delay allowed, in milliseconds.
func (d *Delayed) MaxDelayMS() int64 { return d.maxDelayMS }

// Errors.
var (
	// MaxDelayExceeded is MSC4140's answer to a delay above the maximum.
	MaxDelayExceeded = func(max int64) error {
		return (&mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_MAX_DELAY_EXCEEDED",
			Message: fmt.Sprintf("The requested delay exceeds the allowed maximum of %d ms", max)}).
			With("max_delay", max).With("org.matrix.msc4140.max_delay", max)
	}
	errNotFound = func() error { return mxhttp.NotFound("No delayed event with that delay_id") }
)

// ParseDelay reads the org.matrix.msc4140.delay query parameter: ok is
// false when absent; an error when it is not a positive integer, above
// the maximum, or delayed events are off.
func (d *Delayed) ParseDelay(r *http.Request) (ms int64, ok bool, err error) {
	q := r.URL.Query()
	if !q.Has("org.matrix.msc4140.delay") {
		return 0, false, nil
	}
	if !d.Enabled() {
		return 0, false, mxhttp.Unknown("Delayed events are not enabled on this server")
	}
	var n int64
	if _, err := fmt.Sscan(q.Get("org.matrix.msc4140.delay"), &n); err != nil || n <= 0 ||
		fmt.Sprint(n) != q.Get("org.matrix.msc4140.delay") {
		return 0, false, mxhttp.InvalidParam("org.matrix.msc4140.delay must be a positive integer of milliseconds")
	}
	if n > d.maxDelayMS {
		return 0, false, MaxDelayExceeded(d.maxDelayMS)
	}
	return n, true, nil
}

// Request is an event to send later.
type Request struct {
	UserID, DeviceID string
	// Txn identifies the scheduling request for retries (the send
	// endpoint's transaction, with its room and type); empty: none.
	Txn      string
	RoomID   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	DelayMS  int64
}

// ByTxn is the delay_id an earlier request with the same transaction got.
func (d *Delayed) ByTxn(ctx context.Context, userID, deviceID, txn string) (string, bool, error) {
	row, err := d.db.DelayedEventByTxn(ctx, userID, deviceID, txn)
	if errors.Is(err, storage.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return row.DelayID, true, nil
}

// Schedule stores req and returns its delay_id; a retry of the same
// transaction returns the first one's.
func (d *Delayed) Schedule(ctx context.Context, req Request) (string, error) {
	now := time.Now().UnixMilli()
	row := storage.DelayedEvent{
		DelayID: newDelayID(), UserID: req.UserID, DeviceID: req.DeviceID, RoomID: req.RoomID,
		Type: req.Type, StateKey: req.StateKey, Content: string(req.Content), DelayMS: req.DelayMS,
		ScheduledAt: now, SendTS: now + req.DelayMS,
	}
	if req.Txn != "" {
		row.Txn = &req.Txn
	}
	err := d.db.InsertDelayedEvent(ctx, row)
	if errors.Is(err, storage.ErrConflict) && req.Txn != "" {
		if id, ok, err := d.ByTxn(ctx, req.UserID, req.DeviceID, req.Txn); err != nil || ok {
			return id, err
		}
	}
	if err != nil {
		return "", err
	}
	d.scheduled()
	return row.DelayID, nil
}

// newDelayID is an unguessable delay_id: whoever knows it may send,
// restart or cancel the event (the management endpoints need no access
// token, for the services a client hands it to).
func newDelayID() string {
	return "syd_" + rand.Text()
}

func (d *Delayed) scheduled() {
	d.Kick()
	if d.Scheduled != nil {
		d.Scheduled()
	}
}

// Get is a delayed event of userID (any user's when userID is empty);
// 404 M_NOT_FOUND when there is none or it is someone else's.
func (d *Delayed) Get(ctx context.Context, delayID, userID string) (storage.DelayedEvent, error) {
	row, err := d.db.GetDelayedEvent(ctx, delayID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && userID != "" && row.UserID != userID) {
		return row, errNotFound()
	}
	return row, err
}

// List is userID's pending delayed events, by send time, or (finalised)
// their finalised ones, latest first.
func (d *Delayed) List(ctx context.Context, userID string, finalised bool) ([]storage.DelayedEvent, error) {
	return d.db.UserDelayedEvents(ctx, userID, finalised)
}

// Management actions.
const (
	ActionSend    = "send"
	ActionCancel  = "cancel"
	ActionRestart = "restart"
)

// Act applies a management action to a delayed event. userID is the
// caller, or empty for a request without an access token (the delay_id
// is then the credential); another user's delayed event is 404.
func (d *Delayed) Act(ctx context.Context, delayID, userID, action string) error {
	row, err := d.Get(ctx, delayID, userID)
	if err != nil {
		return err
	}
	now := time.Now().UnixMilli()
	conflict := func() error {
		return mxhttp.Unknown("The delayed event was already %s", row.Status).WithStatus(http.StatusConflict)
	}
	switch action {
	case ActionCancel:
		ok, err := d.db.CancelDelayedEvent(ctx, delayID, now)
		if err != nil || ok {
			return err
		}
		if row, err = d.Get(ctx, delayID, ""); err != nil {
			return err
		}
		if row.Status == storage.DelayedCancelled || row.Status == storage.DelayedFailed {
			return nil // already cancelled: a retry
		}
		return conflict()
	case ActionRestart:
		ok, err := d.db.RestartDelayedEvent(ctx, delayID, now)
		if err != nil {
			return err
		}
		if ok {
			d.scheduled()
			return nil
		}
		if row, err = d.Get(ctx, delayID, ""); err != nil {
			return err
		}
		return conflict()
	case ActionSend:
		ok, err := d.db.ClaimDelayedEvent(ctx, delayID, now, 0)
		if err != nil {
			return err
		}
		if !ok {
			if row, err = d.Get(ctx, delayID, ""); err != nil {
				return err
			}
			if row.Status == storage.DelayedSent || row.Status == storage.DelayedSending {
				return nil // already sent, or being sent: a retry
			}
			return conflict()
		}
		eventID, err := d.send(row)
		if err != nil {
			// MSC4140: the event stays scheduled, and the caller gets the
			// error a plain send would have had.
			if uerr := d.db.UnclaimDelayedEvent(context.WithoutCancel(ctx), delayID); uerr != nil {
				d.log.Error("putting a delayed event back on schedule", "delay_id", delayID, "err", uerr)
			}
			return err
		}
		return d.db.FinishDelayedEvent(context.WithoutCancel(ctx), delayID, eventID, "", time.Now().UnixMilli())
	}
	return mxhttp.Unrecognized("Unknown delayed event action %q", action)
}

// sendTimeout bounds one delayed send.
const sendTimeout = 30 * time.Second

// send sends a claimed delayed event through the room core and returns
// its event ID. The transaction ID makes it idempotent: a claim taken
// again after a crash gets the event already sent, not a second one.
func (d *Delayed) send(row storage.DelayedEvent) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	evs, err := d.rooms.Send(ctx, row.RoomID, rooms.Proto{
		Sender: row.UserID, Type: row.Type, StateKey: row.StateKey, Content: json.RawMessage(row.Content),
		Device: row.DeviceID, TxnScope: TxnScope, TxnID: row.DelayID,
		InTx: func(ctx context.Context, tx *sql.Tx, ev *rooms.Event) error {
			return storage.MarkDelayedEventSent(ctx, tx, row.DelayID, ev.EventID, time.Now().UnixMilli())
		},
	})
	if err != nil {
		// Another process sending the same claim at the same moment (a
		// claim taken again while its first sender was still alive) loses
		// on the transaction's primary key: the event is the winner's.
		if id, lerr := storage.LookupTxn(ctx, d.db.Read(), row.UserID, row.DeviceID, TxnScope, row.DelayID); lerr == nil {
			return id, nil
		}
		return "", err
	}
	return evs[0].EventID, nil
}

// Kick makes the scheduler look at the store now.
func (d *Delayed) Kick() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// Start runs the scheduler (when this process leads); Stop ends it.
func (d *Delayed) Start() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cancel != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.cancel, d.done = cancel, done
	go func() {
		// done, not d.done: Stop clears the field without waiting for
		// this goroutine to have started.
		defer close(done)
		d.run(ctx)
	}()
}

// Stop ends the scheduler and waits for it; a send under way completes.
func (d *Delayed) Stop() {
	d.mu.Lock()
	cancel, done := d.cancel, d.done
	d.cancel, d.done = nil, nil
	d.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// Retention of finalised delayed events (MSC4140 recommends up to 7 days).
const (
	finalisedRetention = 7 * 24 * time.Hour
	pruneEvery         = time.Hour
	// staleClaim is how long a claim may stay unfinished before a running
	// scheduler takes it again (its process died during a send action).
	staleClaim = time.Minute
	dueBatch   = 100
	minWait    = 20 * time.Millisecond
)

func (d *Delayed) run(ctx context.Context) {
	// Claims made before this scheduler started were made by a process
	// that has stopped leading or stopped (or by a send action still under
	// way, which the transaction ID makes harmless): send them now.
	d.retake(ctx, time.Now().UnixMilli())
	lastPrune := time.Time{}
	for ctx.Err() == nil {
		if time.Since(lastPrune) > pruneEvery {
			if err := d.db.PruneDelayedEvents(ctx, time.Now().Add(-finalisedRetention).UnixMilli()); err != nil && ctx.Err() == nil {
				d.log.Warn("pruning finalised delayed events", "err", err)
			}
			d.retake(ctx, time.Now().Add(-staleClaim).UnixMilli())
			lastPrune = time.Now()
		}
		d.sendDue(ctx)
		wait := d.poll
		next, ok, err := d.db.NextDelayedSend(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("reading the next delayed event", "err", err)
		}
		if ok {
			if until := time.Until(time.UnixMilli(next)); until < wait {
				wait = until
			}
		}
		if wait < minWait {
			// Due already (it came due while sendDue ran, or the store
			// failed): look again soon, but never spin.
			wait = minWait
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-d.kick:
		case <-t.C:
		}
		t.Stop()
	}
}

// sendDue sends the delayed events whose time has come, earliest first.
func (d *Delayed) sendDue(ctx context.Context) {
	for ctx.Err() == nil {
		now := time.Now().UnixMilli()
		ids, err := d.db.DueDelayedEvents(ctx, now, dueBatch)
		if err != nil {
			if ctx.Err() == nil {
				d.log.Warn("listing due delayed events", "err", err)
			}
			return
		}
		for _, id := range ids {
			if ctx.Err() != nil {
				return
			}
			ok, err := d.db.ClaimDelayedEvent(ctx, id, now, now)
			if err != nil || !ok {
				continue // cancelled, restarted or sent meanwhile
			}
			d.finish(id)
		}
		if len(ids) < dueBatch {
			return
		}
	}
}

// retake sends again the claims made at or before claimedBy.
func (d *Delayed) retake(ctx context.Context, claimedBy int64) {
	ids, err := d.db.StaleDelayedClaims(ctx, claimedBy)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("listing unfinished delayed sends", "err", err)
		}
		return
	}
	for _, id := range ids {
		if ok, err := d.db.RetakeDelayedClaim(ctx, id, claimedBy, time.Now().UnixMilli()); err == nil && ok {
			d.finish(id)
		}
	}
}

// finish sends a claimed delayed event and finalises it: sent, or failed
// with the error (MSC4140: a failed timed send is not retried).
func (d *Delayed) finish(id string) {
	ctx := context.Background()
	row, err := d.db.GetDelayedEvent(ctx, id)
	if err != nil {
		d.log.Warn("reading a claimed delayed event", "delay_id", id, "err", err)
		return
	}
	eventID, err := d.send(row)
	errBody := ""
	if err != nil {
		me := mxhttp.AsError(err)
		if me.Status >= 500 {
			d.log.Error("sending a delayed event", "delay_id", id, "room_id", row.RoomID, "err", err)
		}
		b, _ := json.Marshal(me)
		errBody = string(b)
	}
	if err := d.db.FinishDelayedEvent(ctx, id, eventID, errBody, time.Now().UnixMilli()); err != nil {
		d.log.Error("finalising a delayed event", "delay_id", id, "err", err)
	}
}

// Observe cancels the scheduled delayed state events of other users for
// the state a committed event replaced (the rule of MSC4140 as Synapse
// implements it: a user's own newer state leaves their delayed state
// event alone; someone else's cancels it, with the error
// M_CANCELLED_BY_STATE_UPDATE). Events are committed in every process, so
// every process observes.
func (d *Delayed) Observe(evs []*rooms.Event) {
	var state []*rooms.Event
	for _, ev := range evs {
		if ev.IsState() && !ev.Rejected && !ev.Outlier && !ev.SoftFailed {
			state = append(state, ev)
		}
	}
	if len(state) == 0 {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
		defer cancel()
		body, _ := json.Marshal(map[string]string{"errcode": "M_CANCELLED_BY_STATE_UPDATE",
			"error": "A newer state event from another user replaced this state"})
		for _, ev := range state {
			if _, err := d.db.CancelDelayedStateOfOthers(ctx, ev.RoomID, ev.Type, *ev.StateKey, ev.Sender, string(body), time.Now().UnixMilli()); err != nil {
				d.log.Warn("cancelling delayed state events", "room_id", ev.RoomID, "err", err)
			}
		}
	}()
}
