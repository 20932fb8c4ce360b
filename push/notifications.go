package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
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

// notified is one recipient's notification for an event, before queueing
// it for their gateways.
type notified struct {
	n    storage.Notification
	res  pushrules.Result
	info *eventInfo
}

// recordEvents queues pushes for the recipients with pushers of evs (their
// notifications were stored with the events, see Record) and moves the
// progress, in chunks of one transaction each; then wakes the affected
// senders. Rules are evaluated again here only for events with a
// recipient who has pushers: most recipients have none, and their
// outcome is already stored.
func (p *Push) recordEvents(ctx context.Context, evs []*rooms.Event) error {
	bases := map[string]*roomMembers{}
	for len(evs) > 0 {
		n := min(len(evs), maxChunkEvents)
		chunk := evs[:n]
		evs = evs[n:]
		var maxPos int64
		type candidate struct {
			ev    *rooms.Event
			rm    *roomMembers
			users []string
		}
		var cands []candidate
		var users []string
		seen := map[string]bool{}
		for _, ev := range chunk {
			maxPos = max(maxPos, ev.StreamPos)
			if ev.Rejected || ev.SoftFailed || ev.Outlier {
				continue
			}
			rm, err := p.committedMembers(ctx, ev, bases)
			if err != nil {
				p.log.Warn("evaluating push rules", "event", ev.EventID, "err", err)
				continue
			}
			c := candidate{ev: ev, rm: rm, users: potentialRecipients(ev, rm, p.suffix)}
			for _, u := range c.users {
				if !seen[u] {
					seen[u] = true
					users = append(users, u)
				}
			}
			cands = append(cands, c)
		}
		withPushers, err := p.withPushers(ctx, users)
		if err != nil {
			return err
		}
		has := map[string]bool{}
		for _, u := range withPushers {
			has[u] = true
		}
		var evals []*evaluation
		for _, c := range cands {
			if !slices.ContainsFunc(c.users, func(u string) bool { return has[u] }) {
				continue
			}
			e, err := p.evaluate(ctx, p.db.Read(), c.ev, c.rm)
			if err != nil {
				p.log.Warn("evaluating push rules", "event", c.ev.EventID, "err", err)
				continue
			}
			evals = append(evals, e)
		}
		if err := p.queuePushes(ctx, evals, withPushers, maxPos); err != nil {
			return err
		}
	}
	return nil
}

// potentialRecipients are those who may get an outcome for ev: the local
// joined members other than the sender, and the target of an invite of a
// local user (evaluation.recipients is the exact list).
func potentialRecipients(ev *rooms.Event, rm *roomMembers, suffix string) []string {
	out := make([]string, 0, len(rm.local))
	for u := range rm.local {
		if u != ev.Sender {
			out = append(out, u)
		}
	}
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Membership != nil && *ev.Membership == spec.Invite &&
		strings.HasSuffix(*ev.StateKey, suffix) && rm.local[*ev.StateKey] == nil {
		out = append(out, *ev.StateKey)
	}
	return out
}

// maxChunkEvents bounds the events whose pushes are queued in one
// transaction.
const maxChunkEvents = 200

// withPushers returns those of users who have http pushers.
func (p *Push) withPushers(ctx context.Context, users []string) ([]string, error) {
	if len(users) == 0 {
		return nil, nil
	}
	// One pusher_versions row per recipient tells whether the sender's
	// cached list of their pushers is current: the cost here is per
	// recipient, never per pusher.
	versions, err := storage.PusherVersions(ctx, p.db.Read(), users)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, user := range users {
		if v, ok := versions[user]; ok {
			has, err := p.sender.hasPushers(ctx, user, v)
			if err != nil {
				return nil, err
			}
			if has {
				out = append(out, user)
			}
		}
	}
	return out, nil
}

// progressEvery bounds how often the progress is stored when nothing was
// queued: a crash re-evaluates at most this much at the next start.
const progressEvery = time.Second

// queuePushes queues the notifications of withPushers, the recipients with
// pushers, and moves the progress to maxPos. When nothing is queued the
// progress is stored at most every progressEvery (storeProgress), so the
// writer is not taken after every send for it.
func (p *Push) queuePushes(ctx context.Context, evals []*evaluation, withPushers []string, maxPos int64) error {
	p.owedProgress = max(p.owedProgress, maxPos)
	if len(evals) == 0 || len(withPushers) == 0 {
		if time.Since(p.progressStored) < progressEvery {
			return nil
		}
		return p.storeProgress(ctx)
	}
	var err error
	byUser := map[string][]notified{}
	now := time.Now().UnixMilli()
	for _, e := range evals {
		for _, u := range withPushers {
			res, ok := e.outcome(u)
			if !ok || !res.Notify {
				continue
			}
			actions, _ := json.Marshal(res.Actions)
			byUser[u] = append(byUser[u], notified{res: res, info: e.info, n: storage.Notification{
				UserID: u, RoomID: e.ev.RoomID, EventID: e.ev.EventID, StreamPos: e.ev.StreamPos, ThreadID: e.thread,
				Notify: true, Highlight: res.Highlight, Actions: string(actions), TS: now,
			}})
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
			badge -= int64(len(byUser[user])) // already stored with the events
		}
		if err != nil {
			return err
		}
		totals[user] = badge + int64(len(byUser[user]))
	}
	var queuedFor []string
	err = p.db.WriteTx(ctx, func(tx *sql.Tx) error {
		queuedFor = nil
		if err := p.db.LockPushQueue(ctx, tx); err != nil {
			return err
		}
		// One queue row per notification per user, however many pushers
		// the user has: each pusher reads the rows after its position.
		for _, user := range withPushers {
			mine := byUser[user]
			if len(mine) == 0 {
				continue
			}
			queuedFor = append(queuedFor, user)
			total := totals[user]
			var notBefore int64
			if p.hold > 0 && p.presence != nil && p.presence.ActiveSyncing(user) {
				notBefore = time.Now().Add(p.hold).UnixMilli()
			}
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
		return storage.SetPushProgress(ctx, tx, p.owedProgress)
	})
	if err != nil {
		return err
	}
	p.owedProgress, p.progressStored = 0, time.Now()
	p.sender.wakeUsers(queuedFor...)
	return nil
}

// storeProgress stores the progress owed (queuePushes), if any.
func (p *Push) storeProgress(ctx context.Context) error {
	if p.owedProgress == 0 {
		return nil
	}
	err := p.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.SetPushProgress(ctx, tx, p.owedProgress) })
	if err == nil {
		p.owedProgress, p.progressStored = 0, time.Now()
	}
	return err
}

// roomCtx answers the room questions of one event's evaluation, loading
// state only when a rule asks.
type roomCtx struct {
	p      *Push
	ctx    context.Context
	q      storage.Reader
	ev     *rooms.Event
	joined int

	plOnce sync.Once
	pl     *gomatrixserverlib.PowerLevelContent
}

// stateContent returns the content of a current state event, or nil. It
// looks the one key up: an event's push reads three (eventInfo, once per
// event), where a big room's whole state is tens of thousands.
func (r *roomCtx) stateContent(typ, stateKey string) map[string]any {
	id, err := r.p.rooms.CurrentStateID(r.ctx, r.ev.RoomID, storage.StateKey{Type: typ, StateKey: stateKey})
	if err != nil || id == "" {
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

// senderCanNotify: power levels as last committed (a change in the same
// transaction is seen from the next one on); unreadable counts as no.
func (r *roomCtx) senderCanNotify(key string) bool {
	r.plOnce.Do(func() {
		pl, err := r.p.rooms.PowerLevels(r.ctx, r.ev.RoomID)
		if err != nil {
			r.p.log.Debug("loading power levels for push rules", "room", r.ev.RoomID, "err", err)
			return
		}
		r.pl = pl
	})
	return r.pl != nil && r.pl.UserLevel(spec.SenderID(r.ev.Sender)) >= r.pl.NotificationLevel(key)
}

// UnreadCounts gives a user's unread notification and highlight counts in
// a room: notifications after the user's read receipts (an unthreaded
// receipt covers every thread; a threaded one its thread). perThread
// splits them by thread, with MainThread for events outside threads.
func (p *Push) UnreadCounts(ctx context.Context, userID, roomID string) (notif, highlight int, perThread map[string][2]int, err error) {
	return unreadCounts(ctx, p.db.Read(), userID, roomID)
}

func unreadCounts(ctx context.Context, q storage.Reader, userID, roomID string) (notif, highlight int, perThread map[string][2]int, err error) {
	in, err := storage.UnreadInputs(ctx, q, userID, roomID, 0, 0)
	if err != nil {
		return 0, 0, nil, err
	}
	return countsOf(ctx, q, userID, roomID, in, 0)
}

// UnreadCountsAt is UnreadCounts of the events at stream positions up to
// upTo, which must all be committed (a sync's position). Counted once, a
// member's group rows are kept here by room (countCache), so a later count
// reads only the rows after the last one: the cost of a sync's counts
// does not grow with the number of unread messages.
func (p *Push) UnreadCountsAt(ctx context.Context, userID, roomID string, upTo int64) (notif, highlight int, perThread map[string][2]int, err error) {
	q := p.db.Read()
	key := userID + "\x00" + roomID
	prev := p.counts.get(key)
	var after int64
	if prev != nil && prev.upTo <= upTo {
		after = prev.upTo
	}
	in, err := storage.UnreadInputs(ctx, q, userID, roomID, after, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	if after > 0 {
		if in.Deletions == prev.deletions && in.Read[""] == prev.floor && slices.Equal(in.Epochs, prev.epochs) {
			in.Groups = addCounts(prev.groups, in.Groups)
		} else if in, err = storage.UnreadInputs(ctx, q, userID, roomID, 0, upTo); err != nil {
			return 0, 0, nil, err
		}
	}
	p.counts.put(key, &countEntry{deletions: in.Deletions, floor: in.Read[""], epochs: in.Epochs, upTo: upTo, groups: in.Groups})
	return countsOf(ctx, q, userID, roomID, in, upTo)
}

// countsOf finishes UnreadCounts from what storage.UnreadInputs read.
func countsOf(ctx context.Context, q storage.Reader, userID, roomID string, in storage.UnreadRows, upTo int64) (notif, highlight int, perThread map[string][2]int, err error) {
	perThread, err = rowCounts(ctx, q, userID, roomID, in, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	// What rotation took out of the rows (see rotate.go) counts while the
	// receipts are those it was taken with.
	read := in.Read
	for _, sm := range in.Summaries {
		if read[""] == sm.ReadPos && read[sm.Thread] == sm.ThreadReadPos {
			c := perThread[sm.Thread]
			perThread[sm.Thread] = [2]int{c[0] + sm.Notif, c[1] + sm.Highlight}
		}
	}
	for thread, c := range perThread {
		if c[0] <= 0 {
			delete(perThread, thread)
			continue
		}
		notif += c[0]
		highlight += c[1]
	}
	return notif, highlight, perThread, nil
}

// countEntry is a member's group rows in a room counted up to upTo, with
// what decides which rows count: valid while none was deleted
// (storage.PushDeletions), the unthreaded receipt and the ranges are the
// same.
type countEntry struct {
	deletions, floor, upTo int64
	epochs                 []storage.PushEpoch
	groups                 []storage.ThreadCount
}

// countCache holds countEntry by member and room.
type countCache struct {
	mu sync.Mutex
	m  map[string]*countEntry
}

// maxCachedCounts bounds the cache; beyond it, it starts over.
const maxCachedCounts = 100_000

func (c *countCache) get(key string) *countEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *countCache) put(key string, e *countEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCachedCounts {
		c.m = map[string]*countEntry{}
	}
	c.m[key] = e
}

// addCounts sums two lists of per-thread counts.
func addCounts(a, b []storage.ThreadCount) []storage.ThreadCount {
	out := slices.Clone(a)
	for _, c := range b {
		i := slices.IndexFunc(out, func(o storage.ThreadCount) bool { return o.Thread == c.Thread })
		if i < 0 {
			out = append(out, c)
			continue
		}
		out[i].Notif += c.Notif
		out[i].Highlight += c.Highlight
	}
	return out
}

// rowCounts counts a member's unread notifications in a room from the
// stored rows at positions up to upTo (0: all), per thread, given what
// storage.UnreadInputs read with the same upTo.
func rowCounts(ctx context.Context, q storage.Reader, userID, roomID string, in storage.UnreadRows, upTo int64) (map[string][2]int, error) {
	read := in.Read
	floor := read[""]
	perThread := map[string][2]int{}
	add := func(thread string, n, h int) {
		c := perThread[thread]
		c[0] += n
		c[1] += h
		perThread[thread] = c
	}
	// The rows of the user's groups, over the user's ranges, after the
	// unthreaded receipt; then those a threaded receipt covers are taken
	// off again.
	for _, c := range in.Groups {
		add(c.Thread, c.Notif, c.Highlight)
	}
	for thread, pos := range read {
		if thread == "" || perThread[thread][0] == 0 {
			continue
		}
		for _, e := range in.Epochs {
			lo, hi := max(e.Since, floor), e.Until
			if upTo != 0 && (hi == 0 || hi > upTo) {
				hi = upTo
			}
			if hi != 0 && hi <= lo {
				continue
			}
			top := pos
			if hi != 0 {
				top = min(top, hi)
			}
			if top <= lo {
				continue
			}
			cs, err := storage.GroupCounts(ctx, q, roomID, e.GroupID, userID, lo, top, thread)
			if err != nil {
				return nil, err
			}
			for _, c := range cs {
				add(c.Thread, -c.Notif, -c.Highlight)
			}
		}
	}
	// The user's own outcomes correct their group's.
	for _, n := range in.Own {
		if read[n.ThreadID] >= n.StreamPos || (upTo != 0 && n.StreamPos > upTo) {
			continue
		}
		add(n.ThreadID, b2i(n.Notify)-b2i(n.GroupNotify), b2i(n.Notify && n.Highlight)-b2i(n.GroupHighlight))
	}
	return perThread, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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

// ruleCache keeps each user's compiled push rules and the templates of
// their groups; RulesChanged drops an entry. A version counter keeps a
// load that raced with a change from storing the old rules, and tells the
// room caches to look at the members' rules again.
type ruleCache struct {
	db          *storage.DB
	threadRules bool // Deps.ThreadSubscriptionRules
	mu          sync.RWMutex
	m           map[string]*userRules
	templates   map[int64]*pushrules.Compiled
	version     uint64
}

// maxCachedRules bounds the cache; beyond it, it starts over.
const maxCachedRules = 100_000

func newRuleCache(db *storage.DB, threadRules bool) *ruleCache {
	return &ruleCache{db: db, threadRules: threadRules, m: map[string]*userRules{}, templates: map[int64]*pushrules.Compiled{}}
}

func (c *ruleCache) currentVersion() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

func (c *ruleCache) get(ctx context.Context, userID string) (*userRules, error) {
	c.mu.RLock()
	r, ok := c.m[userID]
	version := c.version
	c.mu.RUnlock()
	if ok {
		return r, nil
	}
	var content []byte
	d, err := c.db.GetAccountData(ctx, userID, "", "m.push_rules")
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		content = d.Content
	}
	return c.store(userID, content, version)
}

// prefetch reads the rules of those of users not cached yet in batches:
// a big room's members on a cold cache cost a read per 500 members, not
// one each. A user whose rules do not parse is left for get to report.
func (c *ruleCache) prefetch(ctx context.Context, users []string) error {
	c.mu.RLock()
	version := c.version
	var missing []string
	for _, u := range users {
		if _, ok := c.m[u]; !ok {
			missing = append(missing, u)
		}
	}
	c.mu.RUnlock()
	if len(missing) < 2 {
		return nil
	}
	contents, err := c.db.GlobalAccountDataOfUsers(ctx, missing, "m.push_rules")
	if err != nil {
		return err
	}
	for _, u := range missing {
		_, _ = c.store(u, contents[u], version)
	}
	return nil
}

// store compiles a user's rules (content nil: none stored) and caches
// them, unless the rules changed since version was read.
func (c *ruleCache) store(userID string, content []byte, version uint64) (*userRules, error) {
	var u pushrules.UserRules
	if content != nil {
		var err error
		if u, err = pushrules.ParseUserRules(content); err != nil {
			return nil, err
		}
	}
	u.ThreadRules = c.threadRules
	r := &userRules{group: u.GroupKey(), ownRules: u, userID: userID}
	localpart, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	if !strings.ContainsAny(localpart, "*?[") {
		r.localWord = pushrules.FirstWord(localpart)
	}
	c.mu.RLock()
	r.template = c.templates[r.group]
	c.mu.RUnlock()
	if r.template == nil {
		r.template = u.Template()
	}
	c.mu.Lock()
	if t, ok := c.templates[r.group]; ok {
		r.template = t
	} else {
		c.templates[r.group] = r.template
	}
	if c.version == version {
		if len(c.m) >= maxCachedRules {
			c.m = map[string]*userRules{}
		}
		c.m[userID] = r
	}
	c.mu.Unlock()
	return r, nil
}

func (c *ruleCache) clear() {
	c.mu.Lock()
	c.m = map[string]*userRules{}
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

// getAll returns the display names of member events (event ID -> name),
// loading those not cached through q in one query.
func (c *memberNames) getAll(ctx context.Context, rs *rooms.Rooms, q storage.Reader, events map[string]string) map[string]string {
	out := make(map[string]string, len(events))
	var missing []string
	c.mu.Lock()
	for id := range events {
		if name, ok := c.m[id]; ok {
			out[id] = name
		} else if id != "" {
			missing = append(missing, id)
		}
	}
	c.mu.Unlock()
	if len(missing) == 0 {
		return out
	}
	byID, err := rs.Events(ctx, q, missing)
	if err != nil {
		return out // not cached: a later event retries
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ev := range byID {
		var content struct {
			DisplayName string `json:"displayname"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &content)
		out[id] = content.DisplayName
		if c.m == nil || len(c.m) >= maxCachedNames {
			c.m = map[string]string{}
		}
		c.m[id] = content.DisplayName
	}
	return out
}
