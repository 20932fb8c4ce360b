package homeserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/storage"
)

// leadership elects, among the processes sharing one PostgreSQL database,
// the one that runs the work that must not run twice: the federation
// senders, push delivery, application-service pushes and the delayed
// events scheduler. The leader holds a session advisory lock on a
// connection of its own; PostgreSQL releases it when that connection ends,
// so a leader that dies hands over to the first other process whose next
// attempt (every leaderRetry) takes the lock; one that stops announces it
// (relayMessage.SteppedDown) and the others try at once. A leader checks
// its connection as often, and stops leading when it fails (the lock may
// be someone else's by then).
type leadership struct {
	db  *storage.DB
	log *slog.Logger
	key int32
	// lead starts the leader's work; follow stops it.
	lead   func(ctx context.Context)
	follow func()

	conn    *storage.SessionConn // holding the lock while leading
	leading bool
	poke    chan struct{} // an attempt now: the leader has just stepped down

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// leaderRetry is how often a follower tries to take over and a leader
// checks that it still leads.
const leaderRetry = 2 * time.Second

func newLeadership(ctx context.Context, db *storage.DB, log *slog.Logger, lead func(context.Context), follow func()) (*leadership, error) {
	key, err := db.ClusterKey(ctx)
	if err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(context.Background())
	return &leadership{db: db, log: log, key: key, lead: lead, follow: follow, poke: make(chan struct{}, 1), ctx: lctx, cancel: cancel}, nil
}

// start makes a first attempt before it returns (so the first process
// started leads at once), then keeps trying or checking in the background.
func (l *leadership) start() {
	l.attempt()
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := time.NewTicker(leaderRetry)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				l.attempt()
			case <-l.poke:
				l.attempt()
			case <-l.ctx.Done():
				return
			}
		}
	}()
}

// attempt takes the lock when following, or checks the connection that
// holds it when leading.
func (l *leadership) attempt() {
	ctx, cancel := context.WithTimeout(l.ctx, leaderRetry)
	defer cancel()
	if l.leading {
		if err := l.conn.Ping(ctx); err != nil {
			l.log.Warn("lost the connection holding leadership; stopping background senders", "err", err)
			l.stepDown()
		}
		return
	}
	if l.conn == nil {
		conn, err := l.db.ConnectSession(ctx)
		if err != nil {
			l.log.Warn("connecting for leadership", "err", err)
			return
		}
		l.conn = conn
	}
	ok, err := l.conn.TryLeaderLock(ctx, l.key)
	if err != nil {
		l.log.Warn("trying to take leadership", "err", err)
		l.conn.Close()
		l.conn = nil
		return
	}
	if ok {
		l.leading = true
		l.log.Info("leading: this process runs the federation senders, push delivery, application-service pushes and the delayed events scheduler")
		l.lead(l.ctx)
	}
}

func (l *leadership) stepDown() {
	l.follow()
	l.leading = false
	l.conn.Close()
	l.conn = nil
}

// tryNow makes the next attempt now rather than at the next tick:
// another process announced that it stepped down.
func (l *leadership) tryNow() {
	select {
	case l.poke <- struct{}{}:
	default:
	}
}

// close stops leading and trying; it reports whether this process led
// (the others may then take over at once).
func (l *leadership) close() (led bool) {
	l.cancel()
	l.wg.Wait()
	led = l.leading
	if l.leading {
		l.stepDown()
	} else if l.conn != nil {
		l.conn.Close()
		l.conn = nil
	}
	return led
}
