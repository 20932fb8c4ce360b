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
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/netguard"
	"github.com/hearth-matrix/hearth/storage"
)

// Delivery to push gateways. Each pusher with undelivered pushes has one
// goroutine that sends its user's queue in order, one at a time, and
// moves the pusher's position only once the gateway accepted a push; a failure (connection error,
// timeout, 5xx, 429) is retried after an exponential backoff with jitter,
// capped, so a dead gateway holds up only its own pushers' queues. At most
// maxInFlight requests run at once across all pushers. Nothing here runs
// on the /send or /sync path: the worker only queues rows and wakes us.

const (
	maxInFlight     = 64
	gatewayTimeout  = 15 * time.Second
	maxGatewayBody  = 64 << 10
	queueBatch      = 50
	defaultMinRetry = time.Second
	defaultMaxRetry = 10 * time.Minute
)

type sender struct {
	db     *storage.DB
	log    *slog.Logger
	client *http.Client
	isRead func(ctx context.Context, userID string, qp storage.QueuedPush) bool
	slots  chan struct{}

	mu sync.Mutex
	// ctx is the sending term, between start and stop; nil or done when
	// this process does not deliver (another process sharing the
	// database leads): wake-ups are then ignored, the queue stays.
	ctx      context.Context
	cancel   context.CancelFunc
	queued   func(ids []int64)       // told of every wake-up, for the leading process
	loops    map[int64]chan struct{} // pusher ID -> wake-up of its running loop
	minRetry time.Duration
	maxRetry time.Duration
	wg       sync.WaitGroup
}

func newSender(db *storage.DB, log *slog.Logger, allowCIDRs []string,
	isRead func(context.Context, string, storage.QueuedPush) bool) (*sender, error) {
	guard, err := netguard.New(allowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("push_gateway_allow_cidrs: %w", err)
	}
	return &sender{
		db: db, log: log, isRead: isRead, slots: make(chan struct{}, maxInFlight),
		loops: map[int64]chan struct{}{}, minRetry: defaultMinRetry, maxRetry: defaultMaxRetry,
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

// start begins a sending term (if none runs) and starts the loops of
// pushers with queued requests: after a restart, or when this process
// takes over delivery from another.
func (s *sender) start(ctx context.Context) error {
	s.mu.Lock()
	if s.ctx == nil || s.ctx.Err() != nil {
		s.ctx, s.cancel = context.WithCancel(ctx)
	}
	s.mu.Unlock()
	ids, err := storage.PushersWithQueue(ctx, s.db.Read())
	if err != nil {
		return err
	}
	s.wakeLocal(ids)
	return nil
}

// halt ends the sending term and returns once every loop has stopped;
// what is queued stays queued.
func (s *sender) halt() {
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.mu.Lock()
	s.loops = map[int64]chan struct{}{}
	s.mu.Unlock()
}

// wake makes the pushers' loops look at their queues, starting loops that
// are not running.
func (s *sender) wake(ids ...int64) {
	if len(ids) > 0 && s.queued != nil {
		s.queued(ids)
	}
	s.wakeLocal(ids)
}

// wakeLocal is wake without telling other processes.
func (s *sender) wakeLocal(ids []int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if ch, ok := s.loops[id]; ok {
			select {
			case ch <- struct{}{}:
			default:
			}
			continue
		}
		if s.ctx == nil || s.ctx.Err() != nil {
			return
		}
		ch := make(chan struct{}, 1)
		s.loops[id] = ch
		s.wg.Add(1)
		go s.loop(s.ctx, id, ch)
	}
}

// loop sends a pusher's queue until it has delivered everything.
func (s *sender) loop(ctx context.Context, id int64, woken chan struct{}) {
	defer s.wg.Done()
	failures := 0
	for {
		pusher, err := storage.GetPusher(ctx, s.db.Read(), id)
		if errors.Is(err, storage.ErrNotFound) {
			s.stop(id)
			return
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
			if !s.sleep(ctx, s.backoff(failures)) {
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
			delete(s.loops, id)
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
				if !commit() || !s.sleep(ctx, wait) {
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
				if !commit() || !s.sleep(ctx, delay) {
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
			s.stop(id)
			return
		}
		if !commit() {
			return
		}
	}
}

func (s *sender) stop(id int64) {
	s.mu.Lock()
	delete(s.loops, id)
	s.mu.Unlock()
}

// backoff is min * 2^(failures-1), capped, with jitter in [d/2, d].
func (s *sender) backoff(failures int) time.Duration {
	s.mu.Lock()
	lo, hi := s.minRetry, s.maxRetry
	s.mu.Unlock()
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
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
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.slots }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, data.URL, bytes.NewReader(body))
	if err != nil {
		return true, nil
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return false, err
	}
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
