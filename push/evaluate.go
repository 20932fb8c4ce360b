package push

import (
	"context"
	"database/sql"
	"encoding/json"
	"maps"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Evaluation by rule group (docs/performance.md, "Push in big rooms").
// An event is evaluated once per rule group present among the room's local
// members (see pushrules.Template), and with a member's own rules only for
// the candidates whose own parts may match it: the mentioned, the invited,
// the members whose localpart or display name is a word of the body, and
// the subscribers of its thread. The outcome is stored in the transaction
// that commits the event (Record): one push_actions row per notifying
// group, a notifications row per member whose outcome differs from their
// group's, and the ranges (push_epochs) that say which group's rows count
// for whom. So a sync that shows an event has its counts, and the cost per
// event grows with the rule groups in the room, not with its members.

// userRules is a user's compiled rules and their group.
type userRules struct {
	group int64
	// own is compiled on first use: only candidates need it, and a
	// compiled ruleset (its body patterns) is kilobytes per member.
	ownOnce  sync.Once
	ownRules pushrules.UserRules
	userID   string
	compiled *pushrules.Compiled
	template *pushrules.Compiled // shared by the group
	// localWord is pushrules.FirstWord of the localpart; "" when the
	// localpart must always be checked.
	localWord string
}

func (r *userRules) own() *pushrules.Compiled {
	r.ownOnce.Do(func() { r.compiled = pushrules.Compile(r.ownRules.Render(r.userID)) })
	return r.compiled
}

// member is a local joined member of a room.
type member struct {
	userID, memberEvent string
	rules               *userRules
}

// roomMembers is a room's local recipients at one state snapshot, built
// once and then read by every event at that snapshot; never changed.
type roomMembers struct {
	roomID       string
	snapshot     int64
	rulesVersion uint64
	joined       map[string]bool // joined members of every server
	local        map[string]*member
	groups       map[int64]*pushrules.Compiled // templates of the groups present
	localIdx     map[string][]string           // localpart's first word -> members
	localAny     []string

	namesOnce sync.Once
	nameIdx   map[string][]string // display name's first word -> members
	nameAny   []string
	names     map[string]string // member -> display name
}

func (p *Push) newRoomMembers(ctx context.Context, roomID string, snapshot int64, version uint64, joined map[string]bool, local map[string]*member) (*roomMembers, error) {
	rm := &roomMembers{roomID: roomID, snapshot: snapshot, rulesVersion: version, joined: joined, local: local,
		groups: map[int64]*pushrules.Compiled{}, localIdx: map[string][]string{}}
	var uncompiled []string
	for _, m := range local {
		if m.rules == nil {
			uncompiled = append(uncompiled, m.userID)
		}
	}
	if err := p.rules.prefetch(ctx, uncompiled); err != nil {
		return nil, err
	}
	for _, m := range local {
		if m.rules == nil {
			r, err := p.rules.get(ctx, m.userID)
			if err != nil {
				return nil, err
			}
			m.rules = r
		}
		rm.groups[m.rules.group] = m.rules.template
		if w := m.rules.localWord; w != "" {
			rm.localIdx[w] = append(rm.localIdx[w], m.userID)
		} else {
			rm.localAny = append(rm.localAny, m.userID)
		}
	}
	return rm, nil
}

// loadMembers builds a room's members from its current state as q sees it.
func (p *Push) loadMembers(ctx context.Context, q storage.Reader, roomID string, snapshot int64, version uint64) (*roomMembers, error) {
	ms, err := storage.MembersOfRoom(ctx, q, roomID)
	if err != nil {
		return nil, err
	}
	joined, local := map[string]bool{}, map[string]*member{}
	for _, m := range ms {
		if m.Membership != spec.Join {
			continue
		}
		joined[m.UserID] = true
		if strings.HasSuffix(m.UserID, p.suffix) {
			local[m.UserID] = &member{userID: m.UserID, memberEvent: m.EventID}
		}
	}
	return p.newRoomMembers(ctx, roomID, snapshot, version, joined, local)
}

// membersAfter returns the members after ev, from base (the members at
// an earlier snapshot) when ev is the only change since, else from q
// (fresh).
func (p *Push) membersAfter(ctx context.Context, q storage.Reader, base *roomMembers, ev *rooms.Event) (rm *roomMembers, fresh bool, err error) {
	version := p.rules.currentVersion()
	if base != nil && base.rulesVersion == version {
		if base.snapshot == ev.SnapshotAfter {
			return base, false, nil
		}
		if base.snapshot == ev.SnapshotBefore && ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Membership != nil {
			target := *ev.StateKey
			joined, local := maps.Clone(base.joined), maps.Clone(base.local)
			delete(joined, target)
			delete(local, target)
			if *ev.Membership == spec.Join {
				joined[target] = true
				if strings.HasSuffix(target, p.suffix) {
					m := &member{userID: target, memberEvent: ev.EventID}
					if old := base.local[target]; old != nil {
						m.rules = old.rules
					}
					local[target] = m
				}
			}
			rm, err := p.newRoomMembers(ctx, ev.RoomID, ev.SnapshotAfter, version, joined, local)
			return rm, false, err
		}
	}
	rm, err = p.loadMembers(ctx, q, ev.RoomID, ev.SnapshotAfter, version)
	return rm, true, err
}

// buildNames indexes the members' display names (on the first event with
// a body at this snapshot).
func (rm *roomMembers) buildNames(ctx context.Context, p *Push, q storage.Reader) {
	rm.namesOnce.Do(func() {
		rm.nameIdx, rm.names = map[string][]string{}, map[string]string{}
		byEvent := map[string]string{}
		for _, m := range rm.local {
			byEvent[m.memberEvent] = m.userID
		}
		names := p.names.getAll(ctx, p.rooms, q, byEvent)
		for _, m := range rm.local {
			name := names[m.memberEvent]
			if name == "" {
				continue
			}
			rm.names[m.userID] = name
			if w := pushrules.FirstWord(name); w != "" {
				rm.nameIdx[w] = append(rm.nameIdx[w], m.userID)
			} else {
				rm.nameAny = append(rm.nameAny, m.userID)
			}
		}
	})
}

// evaluation is the outcome of one event for its room's recipients.
type evaluation struct {
	ev      *rooms.Event
	thread  string
	members *roomMembers
	rc      *roomCtx
	// groups holds each present group's outcome, own the outcomes of the
	// recipients that differ from their group's (or who are in no group:
	// the target of an invite).
	groups map[int64]pushrules.Result
	own    map[string]pushrules.Result
	info   *eventInfo
}

// outcome is a recipient's result: their own, or their group's.
func (e *evaluation) outcome(userID string) (pushrules.Result, bool) {
	if r, ok := e.own[userID]; ok {
		return r, true
	}
	if userID == e.ev.Sender {
		return pushrules.Result{}, false
	}
	if m, ok := e.members.local[userID]; ok {
		return e.groups[m.rules.group], true
	}
	return pushrules.Result{}, false
}

// evaluate runs the rules of ev's recipients: once per group, and with
// their own rules for the candidates.
func (p *Push) evaluate(ctx context.Context, q storage.Reader, ev *rooms.Event, rm *roomMembers) (*evaluation, error) {
	flat, err := pushrules.NewEvent(ev.JSON)
	if err != nil {
		return nil, err
	}
	rc := &roomCtx{p: p, ctx: ctx, q: q, ev: ev, joined: len(rm.joined)}
	e := &evaluation{ev: ev, thread: MainThread, members: rm, rc: rc, groups: map[int64]pushrules.Result{}, own: map[string]pushrules.Result{}}
	e.info = &eventInfo{ev: ev, rc: rc}
	if ev.RelType != nil && *ev.RelType == "m.thread" && ev.RelatesTo != nil {
		e.thread = *ev.RelatesTo
	}
	for g, tmpl := range rm.groups {
		e.groups[g] = tmpl.Evaluate(flat, templateCtx{rc})
	}
	candidates := map[string]bool{}
	for _, u := range flat.Strings(`content.m\.mentions.user_ids`) {
		candidates[u] = true
	}
	invited := ""
	if ev.Type == spec.MRoomMember && ev.StateKey != nil && ev.Membership != nil && *ev.Membership == spec.Invite &&
		strings.HasSuffix(*ev.StateKey, p.suffix) {
		invited = *ev.StateKey
		candidates[invited] = true
	}
	if body, ok := flat.String("content.body"); ok {
		rm.buildNames(ctx, p, q)
		for _, u := range rm.localAny {
			candidates[u] = true
		}
		for _, u := range rm.nameAny {
			candidates[u] = true
		}
		for w := range pushrules.Words(body) {
			for _, u := range rm.localIdx[w] {
				candidates[u] = true
			}
			for _, u := range rm.nameIdx[w] {
				candidates[u] = true
			}
		}
	}
	var subscribers map[string]bool
	threadRules := false
	for _, tmpl := range rm.groups {
		threadRules = threadRules || tmpl.UsesThreadSubscriptions()
	}
	if threadRules && e.thread != MainThread {
		subs, err := storage.ThreadSubscribers(ctx, q, ev.RoomID, e.thread)
		if err != nil {
			return nil, err
		}
		subscribers = map[string]bool{}
		for _, u := range subs {
			subscribers[u] = true
			candidates[u] = true
		}
	}
	delete(candidates, ev.Sender)
	for u := range candidates {
		m, joined := rm.local[u]
		var rules *userRules
		switch {
		case joined:
			rules = m.rules
		case u == invited:
			if rules, err = p.rules.get(ctx, u); err != nil {
				return nil, err
			}
		default:
			continue // mentioned, but not a recipient
		}
		res := rules.own().Evaluate(flat, recipient{roomCtx: rc, userID: u, name: rm.names[u], subscribed: subscribers[u]})
		g := e.groups[rules.group]
		if !joined {
			if res.Notify {
				e.own[u] = res
			}
			continue
		}
		if (res.Notify || g.Notify) && (res.RuleID != g.RuleID || res.Notify != g.Notify) {
			e.own[u] = res
		}
	}
	return e, nil
}

// templateCtx answers for a group's template: a member with no display
// name and no thread subscription (the candidates are those with one).
type templateCtx struct{ *roomCtx }

func (t templateCtx) MemberCount() int                { return t.joined }
func (t templateCtx) DisplayName() string             { return "" }
func (t templateCtx) SenderCanNotify(key string) bool { return t.senderCanNotify(key) }
func (t templateCtx) ThreadSubscribed(string) bool    { return false }

// recipient is the pushrules.RoomContext of one candidate.
type recipient struct {
	*roomCtx
	userID     string
	name       string
	subscribed bool
}

func (r recipient) MemberCount() int                { return r.joined }
func (r recipient) DisplayName() string             { return r.name }
func (r recipient) SenderCanNotify(key string) bool { return r.senderCanNotify(key) }
func (r recipient) ThreadSubscribed(threadID string) bool {
	return r.subscribed && threadID == r.evThread()
}

func (r *roomCtx) evThread() string {
	if r.ev.RelType != nil && *r.ev.RelType == "m.thread" && r.ev.RelatesTo != nil {
		return *r.ev.RelatesTo
	}
	return ""
}

// roomState is a room's members and open ranges as one transaction sees
// them.
type roomState struct {
	members *roomMembers
	epochs  map[string]int64 // member -> group of the open range, as stored
	checked *roomMembers     // the members epochs were last made to match
}

// roomCache holds each room's state as last committed (promoted by
// Observe once the transaction that wrote it committed) and the states of
// transactions still open.
type roomCache struct {
	mu      sync.Mutex
	rooms   map[string]*roomState
	pending map[string]map[string]*roomState // last event ID of a transaction -> its rooms
}

// maxCachedRooms bounds the cache; beyond it, it starts over.
const maxCachedRooms = 10_000

func (c *roomCache) get(roomID string) *roomState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rooms[roomID]
}

func (c *roomCache) stash(key string, states map[string]*roomState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil || len(c.pending) >= 1000 {
		c.pending = map[string]map[string]*roomState{} // rolled back ones pile up otherwise
	}
	c.pending[key] = states
}

// promote makes a committed transaction's room states current.
func (c *roomCache) promote(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	states, ok := c.pending[key]
	if !ok {
		return
	}
	delete(c.pending, key)
	if c.rooms == nil || len(c.rooms) >= maxCachedRooms {
		c.rooms = map[string]*roomState{}
	}
	maps.Copy(c.rooms, states)
}

func (c *roomCache) clear() {
	c.mu.Lock()
	c.rooms, c.pending = nil, nil
	c.mu.Unlock()
}

// Record is the rooms.TxHook: it evaluates committed-to-be events and
// stores their outcome in the same transaction.
func (p *Push) Record(ctx context.Context, tx *sql.Tx, evs []*rooms.Event) error {
	work := map[string]*roomState{}
	now := time.Now().UnixMilli()
	for _, ev := range evs {
		if ev.Rejected || ev.SoftFailed || ev.Outlier {
			continue
		}
		st := work[ev.RoomID]
		if st == nil {
			st = &roomState{}
			if c := p.roomCache.get(ev.RoomID); c != nil {
				st.members, st.checked, st.epochs = c.members, c.checked, maps.Clone(c.epochs)
			}
			work[ev.RoomID] = st
		}
		rm, fresh, err := p.membersAfter(ctx, tx, st.members, ev)
		if err != nil {
			return err
		}
		if fresh {
			// The cached ranges may be those of a state before a
			// transaction that committed and is not promoted yet.
			st.epochs = nil
		}
		st.members = rm
		if err := p.matchEpochs(ctx, tx, st, ev.StreamPos); err != nil {
			return err
		}
		e, err := p.evaluate(ctx, tx, ev, rm)
		if err != nil {
			p.log.Warn("evaluating push rules", "event", ev.EventID, "err", err)
			continue
		}
		for g, res := range e.groups {
			if !res.Notify {
				continue
			}
			actions, _ := json.Marshal(res.Actions)
			if err := storage.InsertPushAction(ctx, tx, storage.PushAction{RoomID: ev.RoomID, GroupID: g, StreamPos: ev.StreamPos,
				EventID: ev.EventID, ThreadID: e.thread, Sender: ev.Sender, Highlight: res.Highlight, Actions: string(actions), TS: now}); err != nil {
				return err
			}
		}
		for u, res := range e.own {
			var g pushrules.Result
			if m, ok := rm.local[u]; ok {
				g = e.groups[m.rules.group]
			}
			actions, _ := json.Marshal(res.Actions)
			if !res.Notify {
				actions = []byte("[]")
			}
			if err := storage.InsertNotification(ctx, tx, storage.Notification{UserID: u, RoomID: ev.RoomID, EventID: ev.EventID,
				StreamPos: ev.StreamPos, ThreadID: e.thread, Notify: res.Notify, Highlight: res.Notify && res.Highlight,
				GroupNotify: g.Notify, GroupHighlight: g.Notify && g.Highlight, Actions: string(actions), TS: now}); err != nil {
				return err
			}
		}
	}
	if len(work) > 0 && len(evs) > 0 {
		p.roomCache.stash(evs[len(evs)-1].EventID, work)
	}
	return nil
}

// matchEpochs makes the stored open ranges of a room match its members
// and their groups from the event at pos on.
func (p *Push) matchEpochs(ctx context.Context, tx *sql.Tx, st *roomState, pos int64) error {
	rm := st.members
	if st.checked == rm && st.epochs != nil {
		return nil
	}
	if st.epochs == nil {
		stored, err := storage.OpenPushEpochs(ctx, tx, rm.roomID)
		if err != nil {
			return err
		}
		st.epochs = stored
	}
	for u, g := range st.epochs {
		if m, ok := rm.local[u]; !ok || m.rules.group != g {
			if err := storage.ClosePushEpoch(ctx, tx, u, rm.roomID, pos-1); err != nil {
				return err
			}
			delete(st.epochs, u)
		}
	}
	for u, m := range rm.local {
		if _, ok := st.epochs[u]; !ok {
			if err := storage.OpenPushEpoch(ctx, tx, u, rm.roomID, pos-1, m.rules.group); err != nil {
				return err
			}
			st.epochs[u] = m.rules.group
		}
	}
	st.checked = rm
	return nil
}

// observeCommitted promotes the room states of a committed transaction.
func (p *Push) observeCommitted(evs []*rooms.Event) {
	if len(evs) > 0 {
		p.roomCache.promote(evs[len(evs)-1].EventID)
	}
}

// committedMembers returns the members after a committed event, from
// the members as last committed.
func (p *Push) committedMembers(ctx context.Context, ev *rooms.Event, bases map[string]*roomMembers) (*roomMembers, error) {
	base := bases[ev.RoomID]
	if base == nil {
		if c := p.roomCache.get(ev.RoomID); c != nil {
			base = c.members
		}
	}
	rm, _, err := p.membersAfter(ctx, p.db.Read(), base, ev)
	if err != nil {
		return nil, err
	}
	bases[ev.RoomID] = rm
	return rm, nil
}
