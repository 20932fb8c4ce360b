package push

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/backoff"
	"github.com/hearth-matrix/hearth/netguard"
	"github.com/hearth-matrix/hearth/storage"
)

// Delivery to push gateways. Each pusher with undelivered pushes has one
// goroutine that sends its user's queue in order, one at a time, and
// moves the pusher's position only once the gateway accepted a push; a
// failure (connection error, timeout, 5xx, 429) is retried after an
// exponential backoff with jitter, capped, so a dead gateway holds up only
// its own pushers' queues. At most maxInFlight pushers read their queue
// and post at once across all users, at most maxPerHost of them to one
// gateway host. Nothing here runs on the /send or
// /sync path: the worker only queues rows and wakes us.
//
// Delivery runs in sending terms, between start and halt: with several
// processes sharing one PostgreSQL only the leader delivers (see
// docs/operations.md); the others queue rows and tell it through the
// relay (queued), and a new leader's start picks up what is queued.

const (
	maxInFlight     = 64
	gatewayTimeout  = 15 * time.Second
	maxGatewayBody  = 64 << 10
	queueBatch      = 50
	defaultMinRetry = time.Second
	defaultMaxRetry = 10 * time.Minute
)

type sender struct {
	parent context.Context // the Push's lifetime; terms derive from it
	db     *storage.DB
	log    *slog.Logger
	client *http.Client
	isRead func(ctx context.Context, userID string, qp storage.QueuedPush) bool
	slots  chan struct{}

	mu sync.Mutex
	// ctx is the sending term, between start and halt; nil or done when
	// this process does not deliver (another process sharing the
	// database leads): loops do not start then, the queue stays.
	ctx    context.Context
	cancel context.CancelFunc
	// queued, when set, is told of the users whose queue grew here, for
	// the process that delivers (the relay).
	queued   func(userIDs []string)
	users    map[string]*userPushers
	hosts    map[string]*hostGate
	minRetry time.Duration
	maxRetry time.Duration
	wg       sync.WaitGroup
}

// userPushers is what the sender knows of one user's http pushers. Waking
// a user costs the same whatever their number of pushers while every
// pusher's loop runs (a dead gateway keeps them running): one channel
// close. Only pushers without a running loop are looked at one by one.
type userPushers struct {
	version int64            // the pusher_versions row ids were loaded at; -1 when not loaded
	ids     map[int64]string // the user's http pushers and their gateway hosts
	running map[int64]bool   // pushers whose loop runs
	active  int              // how many of ids are running
	woken   chan struct{}    // closed and replaced when the user's queue grows
}

func newSender(ctx context.Context, db *storage.DB, log *slog.Logger, allowCIDRs []string,
	isRead func(context.Context, string, storage.QueuedPush) bool) (*sender, error) {
	guard, err := netguard.New(allowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("push_gateway_allow_cidrs: %w", err)
	}
	return &sender{
		parent: ctx, db: db, log: log, isRead: isRead, slots: make(chan struct{}, maxInFlight),
		users: map[string]*userPushers{}, hosts: map[string]*hostGate{}, minRetry: defaultMinRetry, maxRetry: defaultMaxRetry,
		client: &http.Client{
			Transport: guard.Transport(maxInFlight),
			Timeout:   gatewayTimeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 3 {
					return errors.New("too many redirects")
				}
				return nil
			},
		},
	}, nil
}

func (s *sender) setBackoff(minDelay, maxDelay time.Duration) {
	s.mu.Lock()
	s.minRetry, s.maxRetry = minDelay, maxDelay
	s.mu.Unlock()
}

// user returns the user's entry, creating it; s.mu is held.
func (s *sender) user(userID string) *userPushers {
	u, ok := s.users[userID]
	if !ok {
		u = &userPushers{version: -1, running: map[int64]bool{}, woken: make(chan struct{})}
		s.users[userID] = u
	}
	return u
}

// hasPushers reports whether the user has http pushers, given the user's
// pusher_versions row (read before this call, so a change after it makes
// the next call reload): the cached IDs unless the version moved.
func (s *sender) hasPushers(ctx context.Context, userID string, version int64) (bool, error) {
	s.mu.Lock()
	u := s.user(userID)
	if u.version == version {
		n := len(u.ids)
		s.mu.Unlock()
		return n > 0, nil
	}
	s.mu.Unlock()
	data, err := storage.HTTPPusherData(ctx, s.db.Read(), userID)
	if err != nil {
		return false, err
	}
	s.mu.Lock()
	u.version, u.ids, u.active = version, map[int64]string{}, 0
	for id, d := range data {
		u.ids[id] = gatewayHostOf(d)
		if u.running[id] {
			u.active++
		}
	}
	s.mu.Unlock()
	return len(data) > 0, nil
}

// start begins a sending term (if none runs) and starts the loops of
// pushers with queued requests: after a restart, or when this process
// takes over delivery from another.
func (s *sender) start() error {
	s.mu.Lock()
	if s.ctx == nil || s.ctx.Err() != nil {
		s.ctx, s.cancel = context.WithCancel(s.parent)
	}
	ctx := s.ctx
	s.mu.Unlock()
	queued, err := storage.PushersWithQueue(ctx, s.db.Read())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, userID := range queued {
		s.startLoop(s.user(userID), userID, id, "")
	}
	return nil
}

// halt ends the sending term and returns once every loop has stopped;
// what is queued stays queued (for the next term or another process).
func (s *sender) halt() {
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	// Loops that the term's end stopped did not record it: no loop runs
	// now, and none starts until the next term.
	s.mu.Lock()
	for _, u := range s.users {
		u.running, u.active = map[int64]bool{}, 0
	}
	s.hosts = map[string]*hostGate{}
	s.mu.Unlock()
}

// wakeUsers makes the loops of the users' pushers look at their queues,
// starting the loops that are not running; the process that delivers, if
// another, hears of it through queued (one message for all of them).
func (s *sender) wakeUsers(userIDs ...string) {
	if s.queued != nil && len(userIDs) > 0 {
		s.queued(userIDs)
	}
	for _, userID := range userIDs {
		s.wakeUserLocal(userID)
	}
}

// wakeUserLocal is wakeUsers of one user without telling other
// processes. The user's pushers must be known (hasPushers).
func (s *sender) wakeUserLocal(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.user(userID)
	close(u.woken)
	u.woken = make(chan struct{})
	if u.active == len(u.ids) {
		return
	}
	for id, host := range u.ids {
		s.startLoop(u, userID, id, host)
	}
}

// wakeRemote wakes the users whose queues another process grew: nothing
// unless this process delivers. Their pushers are looked up first (this
// process may not know them, or know an old list), off the caller's
// goroutine (the relay's).
func (s *sender) wakeRemote(userIDs []string) {
	s.mu.Lock()
	if s.ctx == nil || s.ctx.Err() != nil || len(userIDs) == 0 {
		s.mu.Unlock()
		return
	}
	ctx := s.ctx
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		versions, err := storage.PusherVersions(ctx, s.db.Read(), userIDs)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("reading pusher versions for another process's pushes", "err", err)
			}
			return
		}
		for _, userID := range userIDs {
			v, ok := versions[userID]
			if !ok {
				continue
			}
			has, err := s.hasPushers(ctx, userID, v)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Error("loading pushers for another process's pushes", "user", userID, "err", err)
				}
				return
			}
			if has {
				s.wakeUserLocal(userID)
			}
		}
	}()
}

// startLoop runs the pusher's loop unless it runs or no sending term runs;
// host is its gateway host if known ("": the loop reads it). s.mu is held.
func (s *sender) startLoop(u *userPushers, userID string, id int64, host string) {
	if u.running[id] || s.ctx == nil || s.ctx.Err() != nil {
		return
	}
	u.running[id] = true
	if _, ok := u.ids[id]; ok {
		u.active++
	}
	s.wg.Add(1)
	go s.loop(s.ctx, u, userID, id, host)
}

// loop sends a pusher's queue until it has delivered everything, or until
// ctx (its sending term) ends.
func (s *sender) loop(ctx context.Context, u *userPushers, userID string, id int64, host string) {
	defer s.wg.Done()
	// A loop holds a slot of its gateway's host and one of the maxInFlight
	// slots while it reads its queue and posts, and gives them up while it
	// sleeps: when many pushers have work (1,000 behind a dead gateway),
	// the others wait without reading their queue or building requests,
	// and one host never holds every slot (see hostGate).
	held, heldHost := false, ""
	release := func() {
		if held {
			<-s.slots
			s.hostDone(heldHost)
			held = false
		}
	}
	acquire := func(host string) bool {
		if held && heldHost == host {
			return true
		}
		release()
		if !s.hostWait(ctx, host) {
			return false
		}
		select {
		case s.slots <- struct{}{}:
			held, heldHost = true, host
			return true
		case <-ctx.Done():
			s.hostDone(host)
			return false
		}
	}
	defer release()
	pause := func(d time.Duration) bool {
		host, wasHeld := heldHost, held
		release()
		return s.sleep(ctx, d) && (!wasHeld || acquire(host))
	}
	failures := 0
	for {
		// Slots first when the host is known: loops that wait read nothing.
		if host != "" && !acquire(host) {
			return
		}
		// The wake-up is taken before the queue is read: a push queued
		// after the read closes it, and the loop reads again.
		s.mu.Lock()
		woken := u.woken
		s.mu.Unlock()
		pusher, err := storage.GetPusher(ctx, s.db.Read(), id)
		if errors.Is(err, storage.ErrNotFound) || (err == nil && (pusher.Kind != "http" || pusher.UserID != userID)) {
			s.stop(u, id)
			return
		}
		if err == nil {
			if host = gatewayHost(pusher); !acquire(host) {
				return
			}
		}
		var batch []storage.QueuedPush
		if err == nil {
			batch, err = storage.NextPushes(ctx, s.db.Read(), pusher.UserID, pusher.SentID, queueBatch)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Error("reading push queue", "pusher", id, "err", err)
			failures++
			if !pause(s.backoff(failures)) {
				return
			}
			continue
		}
		if len(batch) == 0 {
			s.mu.Lock()
			select {
			case <-woken:
				s.mu.Unlock()
				continue
			default:
			}
			u.stopped(id)
			s.mu.Unlock()
			return
		}
		// Delivered positions are written once per batch, and before any
		// wait: a crash may repeat a few pushes, never lose one.
		sent := pusher.SentID
		commit := func() bool {
			if sent == pusher.SentID {
				return true
			}
			err := s.db.WriteTx(ctx, func(tx *sql.Tx) error {
				if err := storage.SetPusherSent(ctx, tx, pusher.ID, sent); err != nil {
					return err
				}
				return storage.TrimPushQueue(ctx, tx, pusher.UserID)
			})
			if err != nil && ctx.Err() == nil {
				s.log.Error("recording push delivery", "pusher", id, "err", err)
			}
			pusher.SentID = sent
			return ctx.Err() == nil
		}
		rejected := false
		for _, qp := range batch {
			if wait := time.Until(time.UnixMilli(qp.NotBefore)); qp.NotBefore > 0 && wait > 0 {
				if !commit() || !pause(wait) {
					return
				}
			}
			if qp.NotBefore > 0 && qp.StreamPos > 0 && s.isRead(ctx, pusher.UserID, qp) {
				sent = qp.ID // held while the user was active elsewhere, and read there
				continue
			}
			body, err := requestBody(pusher, qp)
			if err != nil {
				s.log.Error("dropping a push that cannot be encoded", "pusher", id, "err", err)
				sent = qp.ID
				continue
			}
			rejected, err = s.post(ctx, pusher, body)
			for err != nil {
				failures++
				delay := s.backoff(failures)
				s.log.Warn("push gateway failed; will retry", "pusher", id, "app_id", pusher.AppID, "err", err, "retry_in", delay)
				if !commit() || !pause(delay) {
					return
				}
				rejected, err = s.post(ctx, pusher, body)
			}
			failures = 0
			sent = qp.ID
			if rejected {
				break
			}
		}
		if rejected {
			s.log.Info("push gateway rejected the pushkey; pusher removed", "user", pusher.UserID, "app_id", pusher.AppID)
			err := s.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.DeletePusherByID(ctx, tx, pusher.ID) })
			if err != nil && ctx.Err() == nil {
				s.log.Error("removing rejected pusher", "pusher", id, "err", err)
			}
			s.stop(u, id)
			return
		}
		if !commit() {
			return
		}
	}
}

// Gateway hosts. Most pushers of a server share a few gateways, and a dead
// one holds each request until gatewayTimeout: without a bound per host,
// 64 pushers behind it would hold every slot and delay every other
// gateway's pushes by minutes. A host gets at most maxPerHost slots, and
// failingHostProbes while its last request failed (until one succeeds).
const (
	maxPerHost        = maxInFlight / 2
	failingHostProbes = 2
)

// hostGate is the state of one gateway host (scheme and host:port of the
// pusher's url); s.mu guards it.
type hostGate struct {
	inFlight int
	failing  bool
	freed    chan struct{} // closed and replaced when a slot frees or the limit grows
}

// gatewayHost is the host a pusher's requests go to ("" if its url does
// not parse; post drops such pushers).
func gatewayHost(p storage.Pusher) string { return gatewayHostOf(p.Data) }

// gatewayHostOf is gatewayHost of a pusher's data (JSON).
func gatewayHostOf(pusherData string) string {
	var data struct {
		URL string `json:"url"`
	}
	_ = json.Unmarshal([]byte(pusherData), &data)
	u, err := url.Parse(data.URL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// hostWait takes a slot of host, waiting while it has its limit in flight.
func (s *sender) hostWait(ctx context.Context, host string) bool {
	for {
		s.mu.Lock()
		h := s.hosts[host]
		if h == nil {
			h = &hostGate{freed: make(chan struct{})}
			s.hosts[host] = h
		}
		limit := maxPerHost
		if h.failing {
			limit = failingHostProbes
		}
		if h.inFlight < limit {
			h.inFlight++
			s.mu.Unlock()
			return true
		}
		freed := h.freed
		s.mu.Unlock()
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
}

// hostDone gives back a slot of host taken by hostWait.
func (s *sender) hostDone(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hosts[host]
	if h == nil {
		return
	}
	h.inFlight--
	close(h.freed)
	h.freed = make(chan struct{})
	if h.inFlight <= 0 && !h.failing {
		delete(s.hosts, host)
	}
}

// hostHealth records whether a request to host got an answer that is not
// a failure to retry.
func (s *sender) hostHealth(host string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.hosts[host]
	if h == nil || h.failing == !ok {
		return
	}
	h.failing = !ok
	if ok {
		close(h.freed)
		h.freed = make(chan struct{})
	}
}

func (s *sender) stop(u *userPushers, id int64) {
	s.mu.Lock()
	u.stopped(id)
	s.mu.Unlock()
}

// stopped records that the pusher's loop ended; s.mu is held.
func (u *userPushers) stopped(id int64) {
	if _, ok := u.ids[id]; ok && u.running[id] {
		u.active--
	}
	delete(u.running, id)
}

func (s *sender) backoff(failures int) time.Duration {
	s.mu.Lock()
	lo, hi := s.minRetry, s.maxRetry
	s.mu.Unlock()
	return backoff.Delay(failures, lo, hi)
}

func (s *sender) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// post sends one notify request; rejected reports that the gateway
// rejected this pusher's pushkey. A 4xx other than 429 is the gateway
// refusing this request for good: logged and not retried.
func (s *sender) post(ctx context.Context, pusher storage.Pusher, body []byte) (rejected bool, err error) {
	var data struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal([]byte(pusher.Data), &data); err != nil || data.URL == "" {
		return true, nil // cannot be delivered ever: drop the pusher
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, data.URL, bytes.NewReader(body))
	if err != nil {
		return true, nil
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		s.hostHealth(gatewayHost(pusher), false)
		return false, err
	}
	s.hostHealth(gatewayHost(pusher), resp.StatusCode < 300 || resp.StatusCode >= 400 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode < 500)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxGatewayBody))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return false, fmt.Errorf("gateway answered %d", resp.StatusCode)
	case resp.StatusCode >= 400:
		s.log.Warn("push gateway refused a notification; dropped", "app_id", pusher.AppID, "status", resp.StatusCode)
		return false, nil
	case resp.StatusCode >= 300:
		return false, fmt.Errorf("gateway answered %d", resp.StatusCode)
	}
	var answer struct {
		Rejected []string `json:"rejected"`
	}
	if err := json.Unmarshal(raw, &answer); err != nil {
		s.log.Warn("push gateway answered something that is not JSON", "app_id", pusher.AppID)
		return false, nil
	}
	return slices.Contains(answer.Rejected, pusher.PushKey), nil
}
