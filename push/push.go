// Package push turns committed room events into notifications (push rules
// per recipient, notification and highlight counts for sync and GET
// /notifications) and delivers them to the recipients' push gateways
// (Push Gateway API).
//
// Rules are evaluated once per rule group and stored in the transaction
// that commits the events (Record, the rooms.TxHook; see evaluate.go), so
// the counts a sync reads always include the events it shows and a sync
// never waits for push. Delivery to gateways runs in one ordered
// background worker per server, after the commit: /send never waits for
// it, and a restart queues what a crash left out (the stored progress).
//
// Delivery to gateways is durable (a queue table) and ordered per pusher,
// with one goroutine per pusher that has queued work; see sender.go. The
// worker's work per event is per recipient with pushers whatever their
// number of pushers (a version row per user checks the sender's cached
// pusher list; the badge is kept as a running count), so pushers behind a
// dead gateway cost the send path nothing.
package push

import (
	"cmp"
	"context"
	"database/sql"
	"log/slog"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Deps are what push is built on.
type Deps struct {
	DB         *storage.DB
	Rooms      *rooms.Rooms
	Presence   *syncstream.Presence // nil when presence is off (no hold then)
	ServerName string
	Log        *slog.Logger
	// GatewayAllowCIDRs lets gateways on these internal ranges be reached
	// (push_gateway_allow_cidrs).
	GatewayAllowCIDRs []string
	// Hold is push_hold_seconds: how long to hold a push for a user who is
	// active on another device.
	Hold time.Duration
	// ThreadSubscriptionRules is thread_subscription_push_rules: render
	// MSC4306's postcontent rules.
	ThreadSubscriptionRules bool
	// Standby leaves delivery to gateways off until StartSending: another
	// process sharing the database may be delivering (see
	// docs/operations.md, several processes).
	Standby bool
	// PushesQueued, when set, is told of the users with newly queued
	// pushes, and RulesChanged of users whose push rules changed here:
	// other processes sharing the database must hear of both.
	PushesQueued func(userIDs []string)
	RulesChanged func(userID string)
	// Retention is how long notification rows are kept before rotation
	// (0: DefaultRetention).
	Retention time.Duration
}

// Push is the notification worker and push sender of one server.
type Push struct {
	db       *storage.DB
	rooms    *rooms.Rooms
	presence *syncstream.Presence
	log      *slog.Logger
	suffix   string
	hold     time.Duration
	rules    *ruleCache
	names    memberNames
	// roomCache holds each room's members and open ranges as committed.
	roomCache roomCache
	// counts keeps members' counted group rows for sync (UnreadCountsAt).
	counts countCache
	sender *sender
	// rulesChanged is Deps.RulesChanged.
	rulesChanged func(userID string)
	retention    time.Duration
	// owedProgress is the progress not stored yet, progressStored when it
	// last was (the worker's goroutine only; queuePushes).
	owedProgress   int64
	progressStored time.Time

	mu      sync.Mutex
	pending []job
	signal  chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// job is one unit of the ordered worker: committed events, or a read
// receipt whose badge update must follow the notifications before it.
type job struct {
	events      []*rooms.Event
	receiptUser string
	done        chan struct{} // closed when processed (tests, Flush)
}

// New starts the worker and the sender. Observe committed events with
// p.Observe; catch-up of events a previous run did not evaluate runs first.
func New(d Deps) (*Push, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Push{
		db: d.DB, rooms: d.Rooms, presence: d.Presence, log: d.Log, suffix: ":" + d.ServerName, hold: d.Hold,
		rules: newRuleCache(d.DB, d.ThreadSubscriptionRules), signal: make(chan struct{}, 1), ctx: ctx, cancel: cancel,
		rulesChanged: d.RulesChanged, retention: cmp.Or(d.Retention, DefaultRetention),
	}
	var err error
	if p.sender, err = newSender(ctx, d.DB, d.Log, d.GatewayAllowCIDRs, p.isRead); err != nil {
		cancel()
		return nil, err
	}
	p.sender.queued = d.PushesQueued
	if err := p.catchUp(ctx); err != nil {
		cancel()
		return nil, err
	}
	if !d.Standby {
		if err := p.StartSending(); err != nil {
			cancel()
			return nil, err
		}
	}
	p.wg.Add(1)
	go p.run()
	return p, nil
}

// Close stops the worker and the senders; queued pushes stay queued.
func (p *Push) Close() {
	p.cancel()
	p.wg.Wait()
	p.sender.halt()
}

// StartSending starts delivery to gateways (if it is not running) and
// delivers what is queued: at start, or when this process takes over
// delivery from another process sharing the database.
func (p *Push) StartSending() error { return p.sender.start() }

// StopSending stops delivery and returns once no request is in flight;
// what is queued stays queued for StartSending or another process.
func (p *Push) StopSending() { p.sender.halt() }

// PushesQueued tells delivery of pushes another process queued for these
// users; it does nothing unless this process is delivering.
func (p *Push) PushesQueued(userIDs []string) { p.sender.wakeRemote(userIDs) }

// ForgetRules drops cached push rules: of one user whose rules another
// process changed, or of everyone when userID is "".
func (p *Push) ForgetRules(userID string) {
	if userID == "" {
		p.rules.clear()
		p.roomCache.clear()
	} else {
		p.rules.invalidate(userID)
	}
}

// SetBackoff changes the retry delays of gateway deliveries (tests use
// milliseconds).
func (p *Push) SetBackoff(minDelay, maxDelay time.Duration) { p.sender.setBackoff(minDelay, maxDelay) }

// Observe is the rooms.Observer: it makes the room caches of the
// committed transaction current and queues its events for delivery to
// gateways, and returns at once.
func (p *Push) Observe(evs []*rooms.Event) {
	p.observeCommitted(evs)
	p.enqueue(job{events: evs})
}

// ReadReceipt tells the worker that userID stored a read receipt: once the
// notifications before it are recorded, the user's pushers get a badge
// update if their unread count dropped.
func (p *Push) ReadReceipt(userID string) { p.enqueue(job{receiptUser: userID}) }

// RulesChanged drops the cached push rules of a user (m.push_rules changed).
func (p *Push) RulesChanged(userID string) {
	p.rules.invalidate(userID)
	if p.rulesChanged != nil {
		p.rulesChanged(userID)
	}
}

// Flush waits until everything queued so far is processed.
func (p *Push) Flush(ctx context.Context) error {
	done := make(chan struct{})
	p.enqueue(job{done: done})
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Push) enqueue(j job) {
	p.mu.Lock()
	p.pending = append(p.pending, j)
	p.mu.Unlock()
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// maxBatchEvents bounds the events evaluated in one transaction.
const maxBatchEvents = 200

func (p *Push) run() {
	defer p.wg.Done()
	rotation := time.NewTicker(rotateEvery)
	defer rotation.Stop()
	progress := time.NewTicker(progressEvery)
	defer progress.Stop()
	defer func() {
		// Stopping: store the progress owed, so a restart does not
		// evaluate again what was evaluated.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := p.storeProgress(ctx); err != nil {
			p.log.Error("storing push progress", "err", err)
		}
	}()
	for {
		p.mu.Lock()
		jobs := p.pending
		p.pending = nil
		p.mu.Unlock()
		if len(jobs) == 0 {
			select {
			case <-p.signal:
				continue
			case <-progress.C:
				if time.Since(p.progressStored) >= progressEvery {
					if err := p.storeProgress(p.ctx); err != nil {
						p.log.Error("storing push progress", "err", err)
					}
				}
				continue
			case <-rotation.C:
				if err := p.Rotate(p.ctx, time.Now().Add(-p.retention)); err != nil {
					p.log.Error("rotating notifications", "err", err)
				}
				continue
			case <-p.ctx.Done():
				return
			}
		}
		for len(jobs) > 0 {
			// Take a run of event jobs (up to the batch bound) or one receipt.
			n, count := 0, 0
			for n < len(jobs) && jobs[n].receiptUser == "" && count < maxBatchEvents {
				count += len(jobs[n].events)
				n++
			}
			if n == 0 {
				n = 1
			}
			batch := jobs[:n]
			jobs = jobs[n:]
			p.process(batch)
		}
	}
}

// process handles a batch of jobs. Failures are logged (the stored
// progress lets a restart queue the pushes again).
func (p *Push) process(batch []job) {
	var evs []*rooms.Event
	for _, j := range batch {
		evs = append(evs, j.events...)
	}
	if len(evs) > 0 {
		if err := p.recordEvents(p.ctx, evs); err != nil {
			p.log.Error("queueing pushes", "err", err, "events", len(evs))
		}
	}
	for _, j := range batch {
		if j.receiptUser != "" {
			if err := p.badgeUpdate(p.ctx, j.receiptUser); err != nil {
				p.log.Error("queueing badge update", "err", err, "user", j.receiptUser)
			}
		}
		if j.done != nil {
			close(j.done)
		}
	}
}

// catchUp queues the pushes of events committed after the stored
// progress (a crash between commit and delivery); a first start only
// records the head.
func (p *Push) catchUp(ctx context.Context) error {
	pos, ok, err := storage.PushProgress(ctx, p.db.Read())
	if err != nil {
		return err
	}
	if !ok {
		return nil // new store, or one from before push: nothing owed
	}
	for {
		ids, err := storage.EventIDsAfter(ctx, p.db.Read(), pos, maxBatchEvents)
		if err != nil || len(ids) == 0 {
			return err
		}
		byID, err := p.rooms.Events(ctx, p.db.Read(), ids)
		if err != nil {
			return err
		}
		var evs []*rooms.Event
		for _, id := range ids {
			if ev, ok := byID[id]; ok {
				evs = append(evs, ev)
				pos = max(pos, ev.StreamPos)
			}
		}
		if len(evs) == 0 {
			return nil
		}
		if err := p.recordEvents(ctx, evs); err != nil {
			return err
		}
		p.log.Info("queued pushes for events missed before a restart", "events", len(evs))
	}
}

// DevicesDeleted is the accounts.DeviceDeletedHook that removes the
// pushers a deleted device set (logout, device deletion, password change
// with logout_devices, deactivation).
func DevicesDeleted(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
	return storage.DeleteDevicePushers(ctx, tx, userID, deviceIDs)
}
