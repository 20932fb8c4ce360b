package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// MainThread is the thread ID of events outside any thread, as receipts
// name it.
const MainThread = "main"

// notified is one recipient's notification for an event, before storing.
type notified struct {
	n    storage.Notification
	res  pushrules.Result
	info *eventInfo
}

// recordEvents evaluates every recipient's rules for evs, stores the
// notifications, queues pushes for recipients with pushers, and moves the
// progress, each chunk in one transaction; then wakes the affected senders.
//
// Events are stored in chunks of about maxChunkNotifications notifications,
// one transaction each: in a room with 1,000 members a batch of 200 events
// is 200,000 notifications, which held about 100 MB while it was written.
func (p *Push) recordEvents(ctx context.Context, evs []*rooms.Event) error {
	var notes []notified
	var maxPos int64
	for i, ev := range evs {
		maxPos = max(maxPos, ev.StreamPos)
		if !ev.Rejected && !ev.SoftFailed && !ev.Outlier {
			ns, err := p.evaluate(ctx, ev)
			if err != nil {
				return fmt.Errorf("evaluating %s: %w", ev.EventID, err)
			}
			notes = append(notes, ns...)
		}
		if len(notes) >= maxChunkNotifications || i == len(evs)-1 {
			if err := p.storeNotifications(ctx, notes, maxPos); err != nil {
				return err
			}
			notes = nil
		}
	}
	return nil
}

// maxChunkNotifications bounds the notifications stored in one transaction.
const maxChunkNotifications = 5000

// storeNotifications stores the notifications of events up to stream
// position maxPos, queues their pushes and moves the progress to maxPos.
func (p *Push) storeNotifications(ctx context.Context, notes []notified, maxPos int64) error {
	byUser := map[string][]notified{}
	var users []string
	for _, n := range notes {
		if byUser[n.n.UserID] == nil {
			users = append(users, n.n.UserID)
		}
		byUser[n.n.UserID] = append(byUser[n.n.UserID], n)
	}
	// One pusher_versions row per recipient tells whether the sender's
	// cached list of their pushers is current: the cost here is per
	// recipient, never per pusher.
	versions, err := storage.PusherVersions(ctx, p.db.Read(), users)
	if err != nil {
		return err
	}
	var withPushers []string
	for _, user := range users {
		if v, ok := versions[user]; ok {
			has, err := p.sender.hasPushers(ctx, user, v)
			if err != nil {
				return err
			}
			if has {
				withPushers = append(withPushers, user)
			}
		}
	}
	// The badge is the one last queued plus this batch's notifications;
	// a user without one stored is recounted. Both are read before the
	// transaction (readers do not hold up the writer that /send also
	// needs); a receipt racing with this batch is settled by its badge
	// update, which the worker runs after this batch and which recounts.
	totals := map[string]int64{}
	for _, user := range withPushers {
		badge, ok, err := storage.PushBadge(ctx, p.db.Read(), user)
		if err == nil && !ok {
			badge, err = totalUnread(ctx, p.db.Read(), user)
		}
		if err != nil {
			return err
		}
		totals[user] = badge + int64(len(byUser[user]))
	}
	err = p.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := p.db.LockPushQueue(ctx, tx); err != nil {
			return err
		}
		for _, n := range notes {
			if err := storage.InsertNotification(ctx, tx, n.n); err != nil {
				return err
			}
		}
		// One queue row per notification per user, however many pushers
		// the user has: each pusher reads the rows after its position.
		for _, user := range withPushers {
			total := totals[user]
			var notBefore int64
			if p.hold > 0 && p.presence != nil && p.presence.ActiveSyncing(user) {
				notBefore = time.Now().Add(p.hold).UnixMilli()
			}
			mine := byUser[user]
			for k, n := range mine {
				unread := max(total-int64(len(mine)-1-k), 0)
				body, err := eventBody(n, unread)
				if err != nil {
					return err
				}
				if err := storage.EnqueuePush(ctx, tx, storage.QueuedPush{UserID: user, RoomID: n.n.RoomID, StreamPos: n.n.StreamPos,
					ThreadID: n.n.ThreadID, Body: body, Actions: n.n.Actions, NotBefore: notBefore}); err != nil {
					return err
				}
			}
			if err := storage.SetPushBadge(ctx, tx, user, total); err != nil {
				return err
			}
		}
		return storage.SetPushProgress(ctx, tx, maxPos)
	})
	if err != nil {
		return err
	}
	p.sender.wakeUsers(withPushers...)
	return nil
}

// evaluate runs the push rules of every local recipient of ev: joined
// members other than the sender, and the target of an invite.
func (p *Push) evaluate(ctx context.Context, ev *rooms.Event) ([]notified, error) {
	members, err := storage.MembersOfRoom(ctx, p.db.Read(), ev.RoomID)
	if err != nil {
		return nil, err
	}
	inviteTarget := ""
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Membership != nil && *ev.Membership == spec.Invite {
		inviteTarget = *ev.StateKey
	}
	rc := &roomCtx{p: p, ctx: ctx, ev: ev}
	for _, m := range members {
		if m.Membership == spec.Join {
			rc.joined++
		}
	}
	var flat *pushrules.Event
	var out []notified
	var info *eventInfo
	thread := MainThread
	if ev.RelType != nil && *ev.RelType == "m.thread" && ev.RelatesTo != nil {
		thread = *ev.RelatesTo
	}
	for _, m := range members {
		if m.UserID == ev.Sender || !strings.HasSuffix(m.UserID, p.suffix) ||
			(m.Membership != spec.Join && !(m.Membership == spec.Invite && m.UserID == inviteTarget)) {
			continue
		}
		rules, err := p.rules.get(ctx, m.UserID)
		if err != nil {
			return nil, err
		}
		if flat == nil {
			if flat, err = pushrules.NewEvent(ev.JSON); err != nil {
				return nil, err
			}
		}
		res := rules.Evaluate(flat, recipient{rc, m.UserID, m.EventID})
		if !res.Notify {
			continue
		}
		if info == nil {
			info = &eventInfo{ev: ev, rc: rc}
		}
		actions, _ := json.Marshal(res.Actions)
		out = append(out, notified{res: res, info: info, n: storage.Notification{
			UserID: m.UserID, RoomID: ev.RoomID, EventID: ev.EventID, StreamPos: ev.StreamPos, ThreadID: thread,
			Highlight: res.Highlight, Actions: string(actions), TS: time.Now().UnixMilli(),
		}})
	}
	return out, rc.err
}

// roomCtx answers the room questions of one event's evaluation, loading
// state only when a rule asks.
type roomCtx struct {
	p      *Push
	ctx    context.Context
	ev     *rooms.Event
	joined int
	err    error

	stateOnce sync.Once
	state     rooms.State
	plOnce    sync.Once
	pl        *gomatrixserverlib.PowerLevelContent
}

func (r *roomCtx) currentState() rooms.State {
	r.stateOnce.Do(func() {
		st, err := r.p.rooms.CurrentState(r.ctx, r.ev.RoomID)
		if err != nil {
			r.err = err
		}
		r.state = st
	})
	return r.state
}

// stateContent returns the content of a current state event, or nil.
func (r *roomCtx) stateContent(typ, stateKey string) map[string]any {
	id, ok := r.currentState()[storage.StateKey{Type: typ, StateKey: stateKey}]
	if !ok {
		return nil
	}
	ev, err := r.p.rooms.Event(r.ctx, id)
	if err != nil {
		return nil
	}
	var c map[string]any
	_ = json.Unmarshal(ev.PDU.Content(), &c)
	return c
}

func (r *roomCtx) displayName(userID string) string {
	s, _ := r.stateContent(spec.MRoomMember, userID)["displayname"].(string)
	return s
}

func (r *roomCtx) senderCanNotify(key string) bool {
	r.plOnce.Do(func() {
		pl, err := r.p.rooms.PowerLevels(r.ctx, r.ev.RoomID)
		if err != nil {
			r.err = err
			return
		}
		r.pl = pl
	})
	return r.pl != nil && r.pl.UserLevel(spec.SenderID(r.ev.Sender)) >= r.pl.NotificationLevel(key)
}

// recipient is the pushrules.RoomContext of one recipient.
type recipient struct {
	*roomCtx
	userID      string
	memberEvent string // the recipient's current m.room.member event
}

func (r recipient) MemberCount() int                { return r.joined }
func (r recipient) DisplayName() string             { return r.p.names.get(r.ctx, r.p.rooms, r.memberEvent) }
func (r recipient) SenderCanNotify(key string) bool { return r.senderCanNotify(key) }

// ThreadSubscribed: a failed read counts as not subscribed (the rule
// falls through to the next).
func (r recipient) ThreadSubscribed(threadID string) bool {
	_, err := r.p.db.GetThreadSubscription(r.ctx, r.userID, r.ev.RoomID, threadID)
	return err == nil
}

// UnreadCounts gives a user's unread notification and highlight counts in
// a room: notifications after the user's read receipts (an unthreaded
// receipt covers every thread; a threaded one its thread). perThread
// splits them by thread, with MainThread for events outside threads.
func (p *Push) UnreadCounts(ctx context.Context, userID, roomID string) (notif, highlight int, perThread map[string][2]int, err error) {
	return unreadCounts(ctx, p.db.Read(), userID, roomID)
}

func unreadCounts(ctx context.Context, q storage.Reader, userID, roomID string) (notif, highlight int, perThread map[string][2]int, err error) {
	read, err := storage.ReadPositions(ctx, q, userID, roomID)
	if err != nil {
		return 0, 0, nil, err
	}
	ns, err := storage.NotificationsAfter(ctx, q, userID, roomID, read[""])
	if err != nil {
		return 0, 0, nil, err
	}
	perThread = map[string][2]int{}
	for _, n := range ns {
		if read[n.ThreadID] >= n.StreamPos {
			continue
		}
		c := perThread[n.ThreadID]
		c[0]++
		notif++
		if n.Highlight {
			c[1]++
			highlight++
		}
		perThread[n.ThreadID] = c
	}
	return notif, highlight, perThread, nil
}

// totalUnread is the user's unread notifications across rooms (the
// badge count sent to gateways as counts.unread).
func totalUnread(ctx context.Context, q storage.Reader, userID string) (int64, error) {
	roomIDs, err := storage.RoomsWithNotifications(ctx, q, userID)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, roomID := range roomIDs {
		n, _, _, err := unreadCounts(ctx, q, userID, roomID)
		if err != nil {
			return 0, err
		}
		total += int64(n)
	}
	return total, nil
}

// IsRead reports whether the user's receipts cover an event at pos in
// thread of the room.
func (p *Push) IsRead(ctx context.Context, userID, roomID, thread string, pos int64) (bool, error) {
	read, err := storage.ReadPositions(ctx, p.db.Read(), userID, roomID)
	if err != nil {
		return false, err
	}
	return read[""] >= pos || read[thread] >= pos, nil
}

func (p *Push) isRead(ctx context.Context, userID string, qp storage.QueuedPush) bool {
	read, err := p.IsRead(ctx, userID, qp.RoomID, qp.ThreadID, qp.StreamPos)
	return err == nil && read
}

// badgeUpdate queues a counts-only notification for the user's pushers
// when the unread count is below the one last queued, so a phone clears
// what the user read elsewhere.
func (p *Push) badgeUpdate(ctx context.Context, userID string) error {
	versions, err := storage.PusherVersions(ctx, p.db.Read(), []string{userID})
	if err != nil {
		return err
	}
	v, ok := versions[userID]
	if !ok {
		return nil
	}
	if has, err := p.sender.hasPushers(ctx, userID, v); err != nil || !has {
		return err
	}
	queued := false
	err = p.db.WriteTx(ctx, func(tx *sql.Tx) error {
		queued = false
		if err := p.db.LockPushQueue(ctx, tx); err != nil {
			return err
		}
		total, err := totalUnread(ctx, tx, userID)
		if err != nil {
			return err
		}
		// The recount is stored even when it did not drop, so the
		// worker's running sum starts from an exact count again.
		last, ok, err := storage.PushBadge(ctx, tx, userID)
		if err != nil {
			return err
		}
		if err := storage.SetPushBadge(ctx, tx, userID, total); err != nil || !ok || total >= last {
			return err
		}
		body, err := json.Marshal(gatewayNotification{Counts: &gatewayCounts{Unread: total}, Prio: "high"})
		if err != nil {
			return err
		}
		queued = true
		return storage.EnqueuePush(ctx, tx, storage.QueuedPush{UserID: userID, Body: string(body), Actions: "[]"})
	})
	if err != nil || !queued {
		return err
	}
	p.sender.wakeUsers(userID)
	return nil
}

// ruleCache keeps each user's compiled push rules; RulesChanged drops an
// entry. A version counter keeps a load that raced with a change from
// storing the old rules.
type ruleCache struct {
	db          *storage.DB
	threadRules bool // Deps.ThreadSubscriptionRules
	mu          sync.RWMutex
	m           map[string]*pushrules.Compiled
	version     uint64
}

// maxCachedRules bounds the cache; beyond it, it starts over.
const maxCachedRules = 100_000

func newRuleCache(db *storage.DB, threadRules bool) *ruleCache {
	return &ruleCache{db: db, threadRules: threadRules, m: map[string]*pushrules.Compiled{}}
}

func (c *ruleCache) get(ctx context.Context, userID string) (*pushrules.Compiled, error) {
	c.mu.RLock()
	compiled, ok := c.m[userID]
	version := c.version
	c.mu.RUnlock()
	if ok {
		return compiled, nil
	}
	var u pushrules.UserRules
	d, err := c.db.GetAccountData(ctx, userID, "", "m.push_rules")
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if u, err = pushrules.ParseUserRules(d.Content); err != nil {
			return nil, err
		}
	}
	u.ThreadRules = c.threadRules
	compiled = pushrules.Compile(u.Render(userID))
	c.mu.Lock()
	if c.version == version {
		if len(c.m) >= maxCachedRules {
			c.m = map[string]*pushrules.Compiled{}
		}
		c.m[userID] = compiled
	}
	c.mu.Unlock()
	return compiled, nil
}

func (c *ruleCache) clear() {
	c.mu.Lock()
	c.m = map[string]*pushrules.Compiled{}
	c.version++
	c.mu.Unlock()
}

func (c *ruleCache) invalidate(userID string) {
	c.mu.Lock()
	delete(c.m, userID)
	c.version++
	c.mu.Unlock()
}

// memberNames caches the displayname of m.room.member events by event ID
// (an event never changes), so .m.rule.contains_display_name costs a map
// lookup per recipient instead of loading their member event per message.
type memberNames struct {
	mu sync.Mutex
	m  map[string]string
}

// maxCachedNames bounds the cache; beyond it, it starts over.
const maxCachedNames = 100_000

func (c *memberNames) get(ctx context.Context, rs *rooms.Rooms, eventID string) string {
	c.mu.Lock()
	name, ok := c.m[eventID]
	c.mu.Unlock()
	if ok || eventID == "" {
		return name
	}
	ev, err := rs.Event(ctx, eventID)
	if err != nil {
		return "" // not cached: a later message retries
	}
	var content struct {
		DisplayName string `json:"displayname"`
	}
	_ = json.Unmarshal(ev.PDU.Content(), &content)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedNames {
		c.m = map[string]string{}
	}
	c.m[eventID] = content.DisplayName
	c.mu.Unlock()
	return content.DisplayName
}
