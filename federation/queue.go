package federation

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/backoff"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The outbound queue (server-server API, Transactions). What is to be sent
// is written to the federation_queue_* tables first, in the transaction
// of the caller's choosing, so nothing queued is lost by a crash or
// restart. One sender goroutine per destination with work sends
// transactions of at most 50 PDUs and 100 EDUs, oldest first, deleting the
// rows once the destination accepted them. A failed send is retried with
// exponential backoff and jitter, capped; a request from the destination
// (it is evidently up) cuts the wait short. A sender with nothing left to
// send exits; new work starts it again.

const (
	maxTxnPDUs = 50
	maxTxnEDUs = 100
)

// Queue sends PDUs and EDUs to other servers.
type Queue struct {
	db     *storage.DB
	rooms  *rooms.Rooms
	client fclient.FederationClient
	origin spec.ServerName
	log    *slog.Logger
	// MinBackoff and MaxBackoff bound the wait after a failed send; it
	// doubles per failure, with jitter (backoff.Delay).
	MinBackoff, MaxBackoff time.Duration

	// Queued, when set, is told of destinations with newly queued work
	// (after commit): another process sharing the database may be the one
	// sending. Set it before anything is queued.
	Queued func(destinations []string)

	wg sync.WaitGroup

	mu sync.Mutex
	// ctx is the sending term, between Start and Stop; done when this
	// process does not send (before Start, or while another process
	// sharing the database sends): new work then only stays queued.
	ctx    context.Context
	cancel context.CancelFunc
	dests  map[spec.ServerName]*destinationQueue
}

// destinationQueue is the sender state of one destination.
type destinationQueue struct {
	dest    spec.ServerName
	running bool          // a sender goroutine exists
	pending bool          // work arrived since the sender last looked
	wake    chan struct{} // cuts a backoff wait short
	reset   bool          // an admin reset the backoff: start counting afresh
	// failing is the number of consecutive failed sends (0: the last one
	// worked), failedTotal every failed send since start.
	failing, failedTotal int
}

// DestinationStatus is what the metrics show of one destination's sender.
type DestinationStatus struct {
	Destination string
	// Failing is the number of consecutive failed sends: 0 when the
	// destination is up as far as this process knows.
	Failing int
	// FailedTotal counts failed sends since start.
	FailedTotal int
}

// Status reports every destination this process has sent to since start.
func (q *Queue) Status() []DestinationStatus {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]DestinationStatus, 0, len(q.dests))
	for _, dq := range q.dests {
		out = append(out, DestinationStatus{Destination: string(dq.dest), Failing: dq.failing, FailedTotal: dq.failedTotal})
	}
	return out
}

// NewQueue returns a stopped queue; Start resumes what the tables hold.
func NewQueue(db *storage.DB, rms *rooms.Rooms, client fclient.FederationClient, origin spec.ServerName, log *slog.Logger) *Queue {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return &Queue{db: db, rooms: rms, client: client, origin: origin, log: log,
		MinBackoff: time.Second, MaxBackoff: 30 * time.Minute,
		ctx: ctx, cancel: cancel, dests: map[spec.ServerName]*destinationQueue{}}
}

// Start begins sending (if the queue is stopped) and starts a sender for
// every destination with queued work: at start, or when this process
// takes over sending from another process sharing the database.
func (q *Queue) Start(ctx context.Context) error {
	q.mu.Lock()
	if q.ctx.Err() != nil {
		q.ctx, q.cancel = context.WithCancel(context.WithoutCancel(ctx))
	}
	q.mu.Unlock()
	dests, err := storage.QueueDestinations(ctx, q.db.Read())
	if err != nil {
		return err
	}
	for _, d := range dests {
		q.kick(spec.ServerName(d))
	}
	return nil
}

// Stop stops the senders and waits for them; queued work stays in the
// tables for the next Start, here or in another process.
func (q *Queue) Stop() {
	q.mu.Lock()
	q.cancel()
	q.mu.Unlock()
	q.wg.Wait()
}

// Close stops the senders (see Stop).
func (q *Queue) Close() { q.Stop() }

// Kick makes the senders of destinations look at their queues: another
// process queued work for them. It does nothing while the queue is stopped.
func (q *Queue) Kick(destinations []string) {
	for _, d := range destinations {
		q.kick(spec.ServerName(d))
	}
}

// SendEvents queues events (by ID; they must be persisted) for destinations.
func (q *Queue) SendEvents(ctx context.Context, destinations []spec.ServerName, eventIDs []string) error {
	dests := q.remote(destinations)
	if len(dests) == 0 || len(eventIDs) == 0 {
		return nil
	}
	err := q.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.QueuePDUs(ctx, tx, dests, eventIDs) })
	if err != nil {
		return err
	}
	q.queued(dests)
	return nil
}

// SendEDU queues an EDU for destinations; Origin and Destination are filled in.
func (q *Queue) SendEDU(ctx context.Context, destinations []spec.ServerName, edu gomatrixserverlib.EDU) error {
	return q.db.WriteTx(ctx, func(tx *sql.Tx) error { return q.SendEDUTx(ctx, tx, destinations, edu) })
}

// SendEDUTx queues an EDU for destinations in the caller's transaction tx
// (begun by WriteTx): it is sent once tx commits, and never if it rolls back.
func (q *Queue) SendEDUTx(ctx context.Context, tx *sql.Tx, destinations []spec.ServerName, edu gomatrixserverlib.EDU) error {
	dests := q.remote(destinations)
	if len(dests) == 0 {
		return nil
	}
	b, err := json.Marshal(map[string]any{"edu_type": edu.Type, "content": edu.Content})
	if err != nil {
		return fmt.Errorf("encoding EDU: %w", err)
	}
	if err := storage.QueueEDU(ctx, tx, dests, b); err != nil {
		return err
	}
	q.db.AfterCommit(tx, func() { q.queued(dests) })
	return nil
}

// ServerAlive is called when dest made a request to us: a sender waiting
// out a backoff for it tries again now.
func (q *Queue) ServerAlive(dest spec.ServerName) {
	q.mu.Lock()
	dq, ok := q.dests[dest]
	q.mu.Unlock()
	if ok {
		select {
		case dq.wake <- struct{}{}:
		default:
		}
	}
}

// remote drops our own name and duplicates.
func (q *Queue) remote(destinations []spec.ServerName) []string {
	seen := map[spec.ServerName]bool{}
	var out []string
	for _, d := range destinations {
		if d != q.origin && d != "" && !seen[d] {
			seen[d] = true
			out = append(out, string(d))
		}
	}
	return out
}

// queued starts or wakes the senders of destinations with new work, and
// tells Queued.
func (q *Queue) queued(dests []string) {
	if q.Queued != nil {
		q.Queued(dests)
	}
	q.Kick(dests)
}

// kick makes sure a sender for dest runs and sees the new work.
func (q *Queue) kick(dest spec.ServerName) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ctx.Err() != nil {
		return
	}
	dq, ok := q.dests[dest]
	if !ok {
		dq = &destinationQueue{dest: dest, wake: make(chan struct{}, 1)}
		q.dests[dest] = dq
	}
	if dq.running {
		dq.pending = true
		return
	}
	dq.running = true
	q.wg.Add(1)
	go q.run(q.ctx, dq)
}

// run sends dq's queue until it is empty or the queue is stopped.
func (q *Queue) run(ctx context.Context, dq *destinationQueue) {
	defer q.wg.Done()
	failures := 0
	for ctx.Err() == nil {
		q.mu.Lock()
		dq.pending = false
		if dq.reset {
			dq.reset, failures = false, 0
		}
		q.mu.Unlock()
		sent, err := q.sendBatch(ctx, dq.dest)
		q.mu.Lock()
		if err != nil {
			dq.failing++
			dq.failedTotal++
		} else {
			dq.failing = 0
		}
		q.mu.Unlock()
		if err != nil {
			failures++
			wait := q.backoff(failures)
			q.log.Info("federation send failed; retrying later", "destination", dq.dest, "failures", failures, "retry_in", wait, "err", err)
			// The admin API shows failing destinations (a missed record only
			// hides one from it).
			if rerr := q.db.RecordDestinationFailure(ctx, string(dq.dest), time.Now().UnixMilli(), wait.Milliseconds()); rerr != nil && ctx.Err() == nil {
				q.log.Warn("recording federation failure", "destination", dq.dest, "err", rerr)
			}
			select {
			case <-time.After(wait):
			case <-dq.wake:
			case <-ctx.Done():
			}
			continue
		}
		if failures > 0 {
			if err := q.db.ClearDestinationFailure(ctx, string(dq.dest)); err != nil && ctx.Err() == nil {
				q.log.Warn("clearing federation failure", "destination", dq.dest, "err", err)
			}
		}
		failures = 0
		if sent {
			continue
		}
		q.mu.Lock()
		if !dq.pending {
			dq.running = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
	}
	q.mu.Lock()
	dq.running = false
	q.mu.Unlock()
}

// ResetBackoff forgets dest's failures (the admin API's reset_connection):
// a sender waiting out a backoff tries again now, with the shortest wait
// after its next failure.
func (q *Queue) ResetBackoff(dest spec.ServerName) {
	q.mu.Lock()
	dq, ok := q.dests[dest]
	if ok {
		dq.reset = true
	}
	q.mu.Unlock()
	if ok {
		select {
		case dq.wake <- struct{}{}:
		default:
		}
	}
}

func (q *Queue) backoff(failures int) time.Duration {
	return backoff.Delay(failures, q.MinBackoff, q.MaxBackoff)
}

// sendBatch sends one transaction of the oldest queued work for dest. It
// reports false when there was nothing to send.
func (q *Queue) sendBatch(ctx context.Context, dest spec.ServerName) (bool, error) {
	pdus, err := storage.PendingPDUs(ctx, q.db.Read(), string(dest), maxTxnPDUs)
	if err != nil {
		return false, err
	}
	edus, err := storage.PendingEDUs(ctx, q.db.Read(), string(dest), maxTxnEDUs)
	if err != nil {
		return false, err
	}
	if len(pdus) == 0 && len(edus) == 0 {
		return false, nil
	}
	ids := make([]string, len(pdus))
	for i, p := range pdus {
		ids[i] = p.EventID
	}
	evs, err := q.rooms.Events(ctx, q.db.Read(), ids)
	if err != nil {
		return false, err
	}
	txn := gomatrixserverlib.Transaction{
		Origin: q.origin, Destination: dest, OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs: []json.RawMessage{}, TransactionID: batchID(pdus, edus),
	}
	var pduIDs, eduIDs []int64
	for _, p := range pdus {
		pduIDs = append(pduIDs, p.ID)
		if ev, ok := evs[p.EventID]; ok {
			txn.PDUs = append(txn.PDUs, ev.JSON)
		} else {
			q.log.Warn("queued event not found; dropped", "destination", dest, "event", p.EventID)
		}
	}
	for _, e := range edus {
		eduIDs = append(eduIDs, e.ID)
		var edu gomatrixserverlib.EDU
		if err := json.Unmarshal(e.EDU, &edu); err != nil {
			q.log.Warn("queued EDU unreadable; dropped", "destination", dest, "err", err)
			continue
		}
		edu.Origin, edu.Destination = string(q.origin), string(dest)
		txn.EDUs = append(txn.EDUs, edu)
	}
	if len(txn.PDUs) > 0 || len(txn.EDUs) > 0 {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		resp, err := q.client.SendTransaction(sctx, txn)
		cancel()
		if err != nil {
			return false, err
		}
		for id, res := range resp.PDUs {
			if res.Error != "" {
				q.log.Info("destination refused an event", "destination", dest, "event", id, "error", res.Error)
			}
		}
	}
	if err := q.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.DeleteQueued(ctx, tx, pduIDs, eduIDs) }); err != nil {
		return false, err
	}
	return true, nil
}

// batchID names a transaction by the queue rows it holds, so a retry of
// the same batch (even after a restart) reuses the ID and the destination
// can recognise it, while a batch with any other row gets another ID.
func batchID(pdus []storage.QueuedPDU, edus []storage.QueuedEDU) gomatrixserverlib.TransactionID {
	h := sha256.New()
	for _, p := range pdus {
		fmt.Fprintf(h, "p%d,", p.ID)
	}
	for _, e := range edus {
		fmt.Fprintf(h, "e%d,", e.ID)
	}
	return gomatrixserverlib.TransactionID(hex.EncodeToString(h.Sum(nil)[:12]))
}

// fanOut queues each committed local event for every other server with a
// member joined to the room, and for the server of a member event's target
// (a kicked or banned user's server must hear of it). An invite is the
// exception: the invitee's server signed it through /invite and has it;
// sent again in a transaction it would be a PDU for a room that server is
// not in.
func (q *Queue) fanOut(evs []*rooms.Event) {
	ctx := context.Background()
	byRoom := map[string][]*rooms.Event{}
	var order []string
	for _, ev := range evs {
		if senderServer(ev.Sender) != q.origin || ev.Outlier || ev.Rejected || ev.Distributed {
			continue
		}
		if _, ok := byRoom[ev.RoomID]; !ok {
			order = append(order, ev.RoomID)
		}
		byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
	}
	for _, roomID := range order {
		servers, err := q.joinedServers(ctx, roomID)
		if err != nil {
			q.log.Error("federation fan-out: listing servers", "room", roomID, "err", err)
			continue
		}
		var ids []string
		extra := map[spec.ServerName][]string{}
		for _, ev := range byRoom[roomID] {
			ids = append(ids, ev.EventID)
			if ev.Type == spec.MRoomMember && ev.StateKey != nil && (ev.Membership == nil || *ev.Membership != spec.Invite) {
				if s := senderServer(*ev.StateKey); s != "" && !servers[s] {
					extra[s] = append(extra[s], ev.EventID)
				}
			}
		}
		dests := make([]spec.ServerName, 0, len(servers))
		for s := range servers {
			dests = append(dests, s)
		}
		if err := q.SendEvents(ctx, dests, ids); err != nil {
			q.log.Error("federation fan-out: queueing", "room", roomID, "err", err)
		}
		for s, ids := range extra {
			if err := q.SendEvents(ctx, []spec.ServerName{s}, ids); err != nil {
				q.log.Error("federation fan-out: queueing", "room", roomID, "err", err)
			}
		}
	}
}

// joinedServers are the servers of the room's joined members.
func (q *Queue) joinedServers(ctx context.Context, roomID string) (map[spec.ServerName]bool, error) {
	// The room core's list: while a room's state is partial it holds the
	// servers the send_join answer named (MSC3706).
	servers, err := q.rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	out := make(map[spec.ServerName]bool, len(servers))
	for _, s := range servers {
		out[s] = true
	}
	return out, nil
}

// senderServer is the server part of a user ID, or "".
func senderServer(userID string) spec.ServerName {
	u, err := spec.NewUserID(userID, true)
	if err != nil {
		return ""
	}
	return u.Domain()
}
