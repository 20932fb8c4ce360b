package rtc

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/twitchtv/twirp"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Delegated delayed leave (lk-jwt-service's delay_id, delay_timeout and
// delay_cs_api_url, sent by Element Call with its token request; MSC4140
// "Delegating scheduled delayed events"): the member's client has
// scheduled its hang up as a delayed event and hands its delay_id to the
// service, which watches the member's participant on the SFU. While it is
// there the service restarts the delayed event; once it has gone (a phone
// that died mid-call included) the service sends the hang up at once,
// instead of after the delay. A member that never connects within
// delay_timeout is left to the delayed event's own timer, and so is every
// watch of a process that stops: nothing is lost, only the early send.
//
// Only delayed events of this server's users can be delegated (they are
// in this server's store, and the delay_id must be the member's own);
// delay_cs_api_url is therefore not called, whatever it says.

// Bounds of how often a watch looks at the SFU: a third of the delayed
// event's delay (so two restarts fit in it), within these.
const (
	minWatchInterval = 250 * time.Millisecond
	maxWatchInterval = 5 * time.Second
)

// maxDelegations bounds the watches one process runs at once.
const maxDelegations = 10000

// Delegation is the delay part of a token request.
type Delegation struct {
	DelayID      string `json:"delay_id,omitempty"`
	DelayTimeout int64  `json:"delay_timeout,omitempty"`
	DelayCSAPI   string `json:"delay_cs_api_url,omitempty"`
}

func (d Delegation) requested() bool { return d.DelayID != "" || d.DelayTimeout != 0 }

// watches are the running delegations of a LiveKit service, by delay_id.
type watches struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelFunc
	byID   map[string]*watchEntry
	wg     sync.WaitGroup
}

// watchEntry is one running watch.
type watchEntry struct{ cancel context.CancelFunc }

// SetDelayed lets the service take delegated delayed leave events of
// delayed (nil or disabled: delegation is refused).
func (l *LiveKit) SetDelayed(d *Delayed) { l.delayed = d }

// Close stops the watches (their delayed events keep their timers).
func (l *LiveKit) Close() {
	l.w.mu.Lock()
	l.w.cancel()
	l.w.mu.Unlock()
	l.w.wg.Wait()
}

// checkDelegation validates a delegation before any token is minted: the
// service can take it, the user is ours, and the delay_id is theirs and
// still scheduled. Refusals are 400 M_BAD_JSON, on which Element Call asks
// again without the delay fields.
func (l *LiveKit) checkDelegation(ctx context.Context, userID string, d Delegation) (storage.DelayedEvent, error) {
	refuse := func(msg string) (storage.DelayedEvent, error) {
		return storage.DelayedEvent{}, mxhttp.BadJSON("%s", msg)
	}
	if d.DelayID == "" || d.DelayTimeout <= 0 {
		return refuse("delay_id and a positive delay_timeout go together")
	}
	if !l.delayed.Enabled() {
		return refuse("Delayed events are off on this server")
	}
	if serverOf(userID) != l.opts.ServerName {
		return refuse("Delegation of delayed events is only supported for users of this server")
	}
	if d.DelayTimeout > l.delayed.MaxDelayMS() {
		return refuse("delay_timeout is above this server's maximum delay")
	}
	row, err := l.delayed.Get(ctx, d.DelayID, userID)
	var merr *mxhttp.Error
	if errors.As(err, &merr) && merr.Status == 404 {
		return refuse("No scheduled delayed event of yours has that delay_id")
	}
	if err != nil {
		return storage.DelayedEvent{}, err
	}
	if row.Status != storage.DelayedScheduled {
		return refuse("The delayed event is no longer scheduled")
	}
	return row, nil
}

// watch starts (or replaces) the delegation of row to the participant
// identity in the LiveKit room.
func (l *LiveKit) watch(row storage.DelayedEvent, room, identity string, d Delegation) error {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	if l.w.ctx.Err() != nil {
		return mxhttp.Unknown("The server is stopping")
	}
	if old, ok := l.w.byID[row.DelayID]; ok {
		old.cancel()
	} else if len(l.w.byID) >= maxDelegations {
		return mxhttp.LimitExceeded("Too many delegated delayed events")
	}
	ctx, cancel := context.WithCancel(l.w.ctx)
	entry := &watchEntry{cancel: cancel}
	l.w.byID[row.DelayID] = entry
	delay := time.Duration(row.DelayMS) * time.Millisecond
	interval := min(max(delay/3, minWatchInterval), maxWatchInterval)
	firstBy := time.Now().Add(time.Duration(d.DelayTimeout) * time.Millisecond)
	l.w.wg.Add(1)
	go func() {
		defer l.w.wg.Done()
		defer func() {
			l.w.mu.Lock()
			cancel()
			if l.w.byID[row.DelayID] == entry { // not replaced meanwhile
				delete(l.w.byID, row.DelayID)
			}
			l.w.mu.Unlock()
		}()
		l.runWatch(ctx, row.DelayID, room, identity, interval, delay, firstBy)
	}()
	return nil
}

// runWatch is one delegation's loop. The SFU not answering for longer
// than the delay ends it: nothing was restarted meanwhile, so the delayed
// event has fired by its own timer.
func (l *LiveKit) runWatch(ctx context.Context, delayID, room, identity string, interval, delay time.Duration, firstBy time.Time) {
	t := time.NewTicker(interval)
	defer t.Stop()
	seen, lastAnswer := false, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		present, err := l.participantPresent(ctx, room, identity)
		if err != nil {
			l.log.Warn("livekit: delegated leave: looking up the participant", "room", room, "err", err)
			if time.Since(lastAnswer) > delay || !seen && time.Now().After(firstBy) {
				return
			}
			continue
		}
		lastAnswer = time.Now()
		switch {
		case present:
			seen = true
			if err := l.delayed.Act(ctx, delayID, "", ActionRestart); err != nil {
				// Sent, cancelled or gone: the member's client finished it.
				return
			}
		case seen:
			if err := l.delayed.Act(context.WithoutCancel(ctx), delayID, "", ActionSend); err != nil {
				l.log.Warn("livekit: delegated leave: sending", "err", err)
			} else {
				l.log.Info("livekit: participant left, delegated leave event sent", "room", room)
			}
			return
		case time.Now().After(firstBy):
			return // never connected: the delayed event takes its course
		}
	}
}

// participantPresent asks the SFU whether identity is in room.
func (l *LiveKit) participantPresent(ctx context.Context, room, identity string) (bool, error) {
	ctx, err := l.serviceContext(ctx, &auth.VideoGrant{RoomAdmin: true, Room: room})
	if err != nil {
		return false, err
	}
	p, err := l.rs.GetParticipant(ctx, &livekit.RoomParticipantIdentity{Room: room, Identity: identity})
	var te twirp.Error
	if errors.As(err, &te) && te.Code() == twirp.NotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return p.GetState() != livekit.ParticipantInfo_DISCONNECTED, nil
}
