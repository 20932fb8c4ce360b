package clientapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Simplified sliding sync (MSC4186). The two dialects, the unstable one
// today's clients speak and v4, are request/response translations in
// sliding_sync_dialects.go over the one implementation here. A connection's
// state (what it was sent, per room) is stored per position in the
// database; see docs/sliding-sync.md.

const (
	maxSlidingLists         = 100
	maxSlidingSubscriptions = 100
	maxSlidingRanges        = 10
	maxSlidingStateElems    = 100
	maxSlidingTimelineLimit = 100
	maxSlidingConnIDLen     = 100
	// maxSlidingRoomsPerConn bounds the rooms a connection remembers; the
	// least recently sent are forgotten (and sent in full again if they
	// come back).
	maxSlidingRoomsPerConn = 2000
	// slidingConnIdle is how long an unused connection is kept.
	slidingConnIdle = 7 * 24 * time.Hour
	// maxSlidingToDevice caps the to_device extension's limit.
	maxSlidingToDevice = 1000
)

// ssStateElem matches state by type and state key; nil matches any.
type ssStateElem struct {
	Type, StateKey *string
}

func (e ssStateElem) matches(k storage.StateKey) bool {
	return (e.Type == nil || *e.Type == k.Type) && (e.StateKey == nil || *e.StateKey == k.StateKey)
}

// ssRequiredState is MSC4186's RequiredStateRequest ("$ME" already
// replaced by the user ID).
type ssRequiredState struct {
	Include []ssStateElem `json:"i,omitempty"`
	Exclude []ssStateElem `json:"x,omitempty"`
	Lazy    bool          `json:"l,omitempty"`
}

func (rs ssRequiredState) matches(k storage.StateKey) bool {
	in := false
	for _, e := range rs.Include {
		if e.matches(k) {
			in = true
			break
		}
	}
	if !in {
		return false
	}
	for _, e := range rs.Exclude {
		if e.matches(k) {
			return false
		}
	}
	return true
}

// ssRoomConfig is a list's or subscription's room config.
type ssRoomConfig struct {
	TimelineLimit int
	RequiredState ssRequiredState
}

// ssCombined is the superset of the room configs a room matched.
type ssCombined struct {
	TimelineLimit int               `json:"t"`
	States        []ssRequiredState `json:"s"`
}

func (c *ssCombined) add(rc ssRoomConfig) {
	c.TimelineLimit = max(c.TimelineLimit, rc.TimelineLimit)
	c.States = append(c.States, rc.RequiredState)
}

func (c *ssCombined) matches(k storage.StateKey) bool {
	for _, rs := range c.States {
		if rs.matches(k) {
			return true
		}
	}
	return false
}

func (c *ssCombined) lazy() bool {
	for _, rs := range c.States {
		if rs.Lazy {
			return true
		}
	}
	return false
}

// stateHashes identify the required_state configs combined, one short
// hash each, sorted and without duplicates.
func (c *ssCombined) stateHashes() []string {
	var out []string
	for _, rs := range c.States {
		b, _ := json.Marshal(rs)
		sum := sha256.Sum256(b)
		out = append(out, hex.EncodeToString(sum[:6]))
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// expands reports whether the config asks for more than what a room was
// last sent with: a longer timeline or a required_state config it did not
// have (MSC4186 "Changing room configs"); the room is then sent in full.
func (c *ssCombined) expands(sent ssSentRoom) bool {
	if c.TimelineLimit > sent.Timeline {
		return true
	}
	for _, h := range c.stateHashes() {
		if !slices.Contains(sent.States, h) {
			return true
		}
	}
	return false
}

// ssFilters is SlidingRoomFilter.
type ssFilters struct {
	IsDM, IsEncrypted, IsInvite *bool
	RoomTypes, NotRoomTypes     []*string
	HasRoomTypes                bool
	Spaces                      []string // nil: no filter
	Tags, NotTags               []string // Tags nil: no filter
}

type ssList struct {
	// Ranges are inclusive index ranges; nil means the whole list.
	Ranges  [][2]int
	Config  ssRoomConfig
	Filters ssFilters
}

type ssToDeviceExt struct {
	Since int64
	Limit int
}

type ssExtensions struct {
	ToDevice *ssToDeviceExt
	// ThreadSubs is MSC4308's extension: its limit, 0 when off.
	ThreadSubs                          int
	E2EE, AccountData, Receipts, Typing bool
}

// ssRequest is one sliding sync request in either dialect.
type ssRequest struct {
	ConnID      string
	Pos         string
	Timeout     time.Duration
	SetPresence string
	Lists       map[string]ssList
	Subs        map[string]ssRoomConfig
	Ext         ssExtensions
}

type ssHero struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"displayname,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// ssRoom is a RoomResult; the dialect layer renames what differs.
type ssRoom struct {
	Name              any                 `json:"name,omitempty"`   // string; null (v4) when removed
	Avatar            any                 `json:"avatar,omitempty"` // string; null (v4) when removed
	Heroes            []ssHero            `json:"heroes,omitempty"`
	IsDM              *bool               `json:"is_dm,omitempty"`
	Initial           bool                `json:"initial,omitempty"`
	Membership        string              `json:"membership,omitempty"`
	Lists             []string            `json:"lists,omitempty"`
	RequiredState     []any               `json:"required_state,omitempty"`
	Timeline          []rooms.ClientEvent `json:"timeline,omitempty"`
	PrevBatch         string              `json:"prev_batch,omitempty"`
	Limited           bool                `json:"limited,omitempty"`
	NumLive           *int                `json:"num_live,omitempty"`
	BumpStamp         int64               `json:"bump_stamp,omitempty"`
	JoinedCount       *int                `json:"joined_count,omitempty"`
	InvitedCount      *int                `json:"invited_count,omitempty"`
	NotificationCount *int                `json:"notification_count,omitempty"`
	HighlightCount    *int                `json:"highlight_count,omitempty"`
	InviteState       []json.RawMessage   `json:"invite_state,omitempty"`
	StrippedState     []json.RawMessage   `json:"stripped_state,omitempty"`
	// nameRemoved, avatarRemoved: an incremental result where the room no
	// longer has one (v4 sends null).
	nameRemoved, avatarRemoved bool
}

type ssListResult struct {
	Count int `json:"count"`
}

type ssToDeviceResult struct {
	NextBatch string `json:"next_batch"`
	Events    []any  `json:"events"`
}

type ssE2EEResult struct {
	DeviceLists *syncDeviceLists `json:"device_lists,omitempty"`
	OTKCounts   map[string]int   `json:"device_one_time_keys_count"`
	FallbackKey []string         `json:"device_unused_fallback_key_types"`
}

type ssAccountDataResult struct {
	Global []any            `json:"global"`
	Rooms  map[string][]any `json:"rooms"`
}

type ssRoomsResult struct {
	Rooms map[string]any `json:"rooms"`
}

type ssExtResults struct {
	ToDevice    *ssToDeviceResult    `json:"to_device,omitempty"`
	E2EE        *ssE2EEResult        `json:"e2ee,omitempty"`
	AccountData *ssAccountDataResult `json:"account_data,omitempty"`
	Receipts    *ssRoomsResult       `json:"receipts,omitempty"`
	Typing      *ssRoomsResult       `json:"typing,omitempty"`
	ThreadSubs  *threadSubsResult    `json:"io.element.msc4308.thread_subscriptions,omitempty"`
}

type ssResponse struct {
	Pos        string                  `json:"pos"`
	Lists      map[string]ssListResult `json:"lists"`
	Rooms      map[string]*ssRoom      `json:"rooms"`
	Extensions ssExtResults            `json:"extensions"`
	// listsChanged: some list's count differs from the last response's.
	listsChanged bool
}

// ssSentRoom is what a connection was last sent of a room.
type ssSentRoom struct {
	Pos        int64    `json:"p"`           // events stream position the room was sent up to
	Membership string   `json:"m"`           // membership it was sent with
	EventID    string   `json:"e,omitempty"` // the invite or knock sent
	Timeline   int      `json:"t"`           // timeline_limit
	States     []string `json:"s,omitempty"` // required_state configs (stateHashes)
	Bump       int64    `json:"b,omitempty"`
	DM         bool     `json:"d,omitempty"`
	Notif      int      `json:"n,omitempty"`
	Highlight  int      `json:"h,omitempty"`
}

// ssConnState is a stored position of a connection.
type ssConnState struct {
	Streams string                `json:"s"`
	Rooms   map[string]ssSentRoom `json:"r"`
	Counts  map[string]int        `json:"c"`
}

// A pos is "<position ID>.<sync token>": the ID names the stored
// connection state, the sync token (the streams it covers, as /sync's
// next_batch) lets /messages and /relations take a pos as a pagination
// token as MSC4186 asks, without a lookup. Only the ID counts for sliding
// sync.

// slidingPosStreams returns the sync token part of a pos.
func slidingPosStreams(s string) (string, bool) {
	_, tok, ok := strings.Cut(s, ".")
	return tok, ok
}

func unknownPos(pos string) error {
	return mxhttp.UnknownPos("Unknown or expired pos %q", pos)
}

// slidingSync runs one request: load the connection, compute, long-poll
// while there is nothing to say, store the new position.
func (a *API) slidingSync(ctx context.Context, c accounts.Caller, req ssRequest) (*ssResponse, error) {
	conn := storage.SlidingConn{UserID: c.UserID, DeviceID: c.DeviceID, ConnID: req.ConnID}
	idleBefore := time.Now().Add(-slidingConnIdle).UnixMilli()
	state := ssConnState{Rooms: map[string]ssSentRoom{}, Counts: map[string]int{}}
	var prev int64
	var since *syncstream.Position
	if req.Pos != "" {
		idPart, _, _ := strings.Cut(req.Pos, ".")
		id, err := strconv.ParseInt(idPart, 10, 64)
		if err != nil || id <= 0 {
			return nil, unknownPos(req.Pos)
		}
		raw, err := a.db.LoadSlidingPos(ctx, conn, id, idleBefore)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, unknownPos(req.Pos)
		}
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &state); err != nil {
			return nil, unknownPos(req.Pos)
		}
		pos, err := syncstream.ParseToken(state.Streams)
		if err != nil {
			return nil, unknownPos(req.Pos)
		}
		if state.Rooms == nil {
			state.Rooms = map[string]ssSentRoom{}
		}
		if state.Counts == nil {
			state.Counts = map[string]int{}
		}
		prev, since = id, &pos
	}
	if a.conf().Presence {
		defer a.presence.Syncing(c.UserID, req.SetPresence)()
	}
	deadline := time.Now().Add(req.Timeout)
	waitFrom := since
	for {
		to := a.notifier.Current()
		if since != nil {
			// Another process may have issued pos: never read less than it
			// covered of the streams in the database, even if this process
			// has not heard of all of it yet.
			to = to.NotBehind(*since)
		}
		resp, next, err := a.buildSliding(ctx, c, req, state, since, to)
		if err != nil {
			return nil, err
		}
		if since == nil || !resp.empty() || !time.Now().Before(deadline) {
			raw, err := json.Marshal(next)
			if err != nil {
				return nil, err
			}
			id, err := a.db.SaveSlidingPos(ctx, conn, prev, raw, time.Now().UnixMilli(), idleBefore)
			if errors.Is(err, storage.ErrNotFound) {
				return nil, unknownPos(req.Pos)
			}
			if err != nil {
				return nil, err
			}
			resp.Pos = strconv.FormatInt(id, 10) + "." + next.Streams
			return resp, nil
		}
		// Nothing to say yet: wait for a change after what was just read.
		from := waitFrom.Max(to)
		waitFrom = &from
		wake, hasNew, cancel := a.notifier.Wait(c.UserID, c.DeviceID, from)
		if !hasNew {
			timer := time.NewTimer(time.Until(deadline))
			select {
			case <-wake:
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				cancel()
				return nil, ctx.Err()
			}
			timer.Stop()
		}
		cancel()
	}
}

func (r *ssResponse) empty() bool {
	e := r.Extensions
	return len(r.Rooms) == 0 && !r.listsChanged &&
		(e.ToDevice == nil || len(e.ToDevice.Events) == 0) &&
		(e.E2EE == nil || e.E2EE.DeviceLists == nil) &&
		(e.AccountData == nil || len(e.AccountData.Global)+len(e.AccountData.Rooms) == 0) &&
		(e.Receipts == nil || len(e.Receipts.Rooms) == 0) &&
		(e.Typing == nil || len(e.Typing.Rooms) == 0) &&
		(e.ThreadSubs == nil || len(e.ThreadSubs.Subscribed)+len(e.ThreadSubs.Unsubscribed) == 0)
}

// ssCandidate is a room the user may see in lists.
type ssCandidate struct {
	roomID     string
	membership string
	ev         *rooms.Event
	bump       int64
	// facts, loaded when a filter needs them
	loaded    bool
	encrypted bool
	roomType  *string
}

// buildSliding computes the response for positions (since, to] and the
// connection state after it.
func (a *API) buildSliding(ctx context.Context, c accounts.Caller, req ssRequest, prev ssConnState, since *syncstream.Position, to syncstream.Position) (*ssResponse, ssConnState, error) {
	next := ssConnState{Streams: to.String(), Rooms: make(map[string]ssSentRoom, len(prev.Rooms)), Counts: map[string]int{}}
	for k, v := range prev.Rooms {
		next.Rooms[k] = v
	}
	resp := &ssResponse{Lists: map[string]ssListResult{}, Rooms: map[string]*ssRoom{}}
	sreq := syncRequest{userID: c.UserID, deviceID: c.DeviceID, since: since, ignored: a.ignoredUsers(ctx, c.UserID)}
	var sincePos syncstream.Position
	if since != nil {
		sincePos = *since
	}

	var memberships []storage.Membership
	var completed map[string]*int64
	var err error
	// A connection for extensions only (say encryption) has no rooms to
	// look at.
	hasRooms := len(req.Lists)+len(req.Subs)+len(prev.Rooms) > 0
	if hasRooms {
		// completed: the rooms joined with partial state (MSC3902) and
		// when each became complete; a room the connection had before
		// then is sent again in full, for the resync brought state the
		// partial state lacked (rooms' deferredState, members).
		memberships, completed, err = storage.RoomsOfUserWithPartialState(ctx, a.db.Read(), c.UserID, 0, spec.Join, spec.Invite, spec.Knock, spec.Leave, spec.Ban)
		if err != nil {
			return nil, next, err
		}
	}
	var changed, receiptsChanged map[string]bool
	if since != nil && hasRooms {
		if changed, err = storage.RoomsWithEventsBetween(ctx, a.db.Read(), sincePos.Events, to.Events); err != nil {
			return nil, next, err
		}
		if receiptsChanged, err = a.db.RoomsWithReceiptsBetween(ctx, sincePos.Receipts, to.Receipts); err != nil {
			return nil, next, err
		}
	}
	var cands []*ssCandidate
	byRoom := map[string]*ssCandidate{}
	var gone []*ssCandidate // rooms the connection had that the user left
	kept := memberships[:0]
	var eventIDs []string
	for _, m := range memberships {
		if _, had := prev.Rooms[m.RoomID]; had || m.Membership != spec.Leave && m.Membership != spec.Ban {
			kept = append(kept, m)
			eventIDs = append(eventIDs, m.EventID)
		}
	}
	memberEvs, err := a.rooms.Events(ctx, a.db.Read(), eventIDs)
	if err != nil {
		return nil, next, err
	}
	for _, m := range kept {
		ev, ok := memberEvs[m.EventID]
		if !ok {
			continue // purged meanwhile
		}
		if ev.StreamPos > to.Events {
			continue // after this response's snapshot of the streams
		}
		cand := &ssCandidate{roomID: m.RoomID, membership: m.Membership, ev: ev, bump: ev.StreamPos}
		switch m.Membership {
		case spec.Leave, spec.Ban:
			gone = append(gone, cand)
			continue
		case spec.Invite:
			if sreq.ignored[ev.Sender] {
				continue
			}
			if v, err := a.rooms.InvitePermission(ctx, c.UserID, ev.Sender); err != nil {
				return nil, next, err
			} else if v != rooms.InviteAllowed {
				continue
			}
		case spec.Join:
			bump, err := a.bumpStamp(ctx, m.RoomID, since, to, changed)
			if err != nil {
				return nil, next, err
			}
			if bump > 0 {
				cand.bump = bump
			}
		}
		cands = append(cands, cand)
		byRoom[m.RoomID] = cand
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].bump != cands[j].bump {
			return cands[i].bump > cands[j].bump
		}
		return cands[i].roomID < cands[j].roomID
	})

	dms := a.directRooms(ctx, c.UserID)
	ld := &ssListData{dms: dms}
	joined := map[string]bool{}
	for _, cand := range cands {
		if cand.membership == spec.Join {
			joined[cand.roomID] = true
		}
	}
	configs := map[string]*ssCombined{}
	listsOf := map[string][]string{}
	listNames := make([]string, 0, len(req.Lists))
	for name := range req.Lists {
		listNames = append(listNames, name)
	}
	sort.Strings(listNames)
	for _, name := range listNames {
		l := req.Lists[name]
		var filtered []*ssCandidate
		for _, cand := range cands {
			ok, err := a.ssFilterAllows(ctx, c.UserID, l.Filters, cand, ld, joined)
			if err != nil {
				return nil, next, err
			}
			if ok {
				filtered = append(filtered, cand)
			}
		}
		resp.Lists[name] = ssListResult{Count: len(filtered)}
		next.Counts[name] = len(filtered)
		if old, ok := prev.Counts[name]; !ok || old != len(filtered) {
			resp.listsChanged = true
		}
		ranges := l.Ranges
		if ranges == nil {
			ranges = [][2]int{{0, len(filtered) - 1}}
		}
		for _, rg := range ranges {
			for i := rg[0]; i <= rg[1] && i < len(filtered); i++ {
				id := filtered[i].roomID
				if configs[id] == nil {
					configs[id] = &ssCombined{}
				}
				configs[id].add(l.Config)
				if n := listsOf[id]; len(n) == 0 || n[len(n)-1] != name {
					listsOf[id] = append(n, name)
				}
			}
		}
	}
	for roomID, rc := range req.Subs {
		if byRoom[roomID] == nil {
			continue // not a room the user may see (or has left)
		}
		if configs[roomID] == nil {
			configs[roomID] = &ssCombined{}
		}
		configs[roomID].add(rc)
	}

	roomIDs := make([]string, 0, len(configs))
	for id := range configs {
		roomIDs = append(roomIDs, id)
	}
	sort.Strings(roomIDs)
	initialRooms := map[string]bool{}
	for _, roomID := range roomIDs {
		cand, cfg := byRoom[roomID], configs[roomID]
		sent, had := prev.Rooms[roomID]
		isDM := dms[roomID]
		switch cand.membership {
		case spec.Invite, spec.Knock:
			if had && sent.Membership == cand.membership && sent.EventID == cand.ev.EventID {
				continue
			}
			stripped, err := a.strippedState(ctx, cand.ev)
			if err != nil {
				return nil, next, err
			}
			room := &ssRoom{Initial: true, Membership: cand.membership, Lists: listsOf[roomID], BumpStamp: cand.bump, StrippedState: stripped}
			if isDM {
				room.IsDM = &isDM
			}
			resp.Rooms[roomID] = room
			initialRooms[roomID] = true
			next.Rooms[roomID] = ssSentRoom{Pos: to.Events, Membership: cand.membership, EventID: cand.ev.EventID, Timeline: cfg.TimelineLimit, States: cfg.stateHashes(), Bump: cand.bump, DM: isDM}
		case spec.Join:
			initial := !had || sent.Membership != spec.Join || cfg.expands(sent)
			if pos := completed[roomID]; had && pos != nil && *pos > sent.Pos && *pos <= to.Events {
				initial = true
			}
			// A room sent up to the previous response needs a look only if
			// it has events, receipts (the user's own change its counts) or
			// DM status since; one out of the lists meanwhile may have
			// older news.
			if !initial && sent.DM == isDM && !receiptsChanged[roomID] &&
				(sent.Pos >= to.Events || since != nil && sent.Pos >= sincePos.Events && !changed[roomID]) {
				sent.Pos = max(sent.Pos, to.Events)
				next.Rooms[roomID] = sent
				continue
			}
			room, after, err := a.slidingJoinedRoom(ctx, sreq, roomID, cfg, initial, sent, sincePos, to)
			if err != nil {
				return nil, next, err
			}
			after.Bump, after.DM = cand.bump, isDM
			if room == nil && sent.DM != isDM {
				room = &ssRoom{}
			}
			next.Rooms[roomID] = after
			if room == nil {
				continue
			}
			if initial || cand.bump != sent.Bump {
				room.BumpStamp = cand.bump
			}
			if (initial && isDM) || (!initial && isDM != sent.DM) {
				room.IsDM = &isDM
			}
			room.Membership = spec.Join
			room.Lists = listsOf[roomID]
			resp.Rooms[roomID] = room
			if initial {
				initialRooms[roomID] = true
			}
		}
	}
	// Rooms the user left (or was removed from) since the connection last
	// had them: sent once, up to the leave, then forgotten.
	for _, cand := range gone {
		sent := prev.Rooms[cand.roomID]
		delete(next.Rooms, cand.roomID)
		room, err := a.slidingLeftRoom(ctx, sreq, cand, sent, sincePos)
		if err != nil {
			return nil, next, err
		}
		resp.Rooms[cand.roomID] = room
	}
	trimSlidingRooms(next.Rooms)

	if err := a.slidingExtensions(ctx, req, sreq, since, to, next, initialRooms, receiptsChanged, resp); err != nil {
		return nil, next, err
	}
	return resp, next, nil
}

// ssBumpCache remembers each room's latest bump event as of a stream
// position, so a request need not look again at rooms quiet since then.
type ssBumpCache struct {
	mu sync.Mutex
	m  map[string]ssBump
}

type ssBump struct{ pos, upTo int64 }

// maxBumpCache bounds the cache; it is emptied when full.
const maxBumpCache = 100000

// bumpStamp is the stream position of the room's latest bump event as of
// to. A cached value read at or after since stays good for a room without
// events in (since, to] (changed); the cache is filled from the database,
// so it holds across processes sharing it.
func (a *API) bumpStamp(ctx context.Context, roomID string, since *syncstream.Position, to syncstream.Position, changed map[string]bool) (int64, error) {
	a.bumps.mu.Lock()
	b, ok := a.bumps.m[roomID]
	a.bumps.mu.Unlock()
	if ok && b.upTo == to.Events {
		return b.pos, nil
	}
	if ok && since != nil && b.upTo >= since.Events && b.upTo <= to.Events && !changed[roomID] {
		// Still good at to: move the entry up, or the next request (from
		// to) would find it too old and read the database again.
		a.bumps.mu.Lock()
		if cur, ok := a.bumps.m[roomID]; ok && cur.upTo < to.Events {
			a.bumps.m[roomID] = ssBump{pos: b.pos, upTo: to.Events}
		}
		a.bumps.mu.Unlock()
		return b.pos, nil
	}
	pos, err := storage.LatestBumpPos(ctx, a.db.Read(), roomID, to.Events)
	if err != nil {
		return 0, err
	}
	a.bumps.mu.Lock()
	if a.bumps.m == nil || len(a.bumps.m) >= maxBumpCache {
		a.bumps.m = map[string]ssBump{}
	}
	if old, ok := a.bumps.m[roomID]; !ok || old.upTo < to.Events {
		a.bumps.m[roomID] = ssBump{pos: pos, upTo: to.Events}
	}
	a.bumps.mu.Unlock()
	return pos, nil
}

// trimSlidingRooms keeps a connection's memory bounded: the rooms sent
// longest ago are forgotten first.
func trimSlidingRooms(m map[string]ssSentRoom) {
	if len(m) <= maxSlidingRoomsPerConn {
		return
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return m[ids[i]].Pos < m[ids[j]].Pos })
	for _, id := range ids[:len(m)-maxSlidingRoomsPerConn] {
		delete(m, id)
	}
}

// directRooms is the set of rooms in the user's m.direct account data.
func (a *API) directRooms(ctx context.Context, userID string) map[string]bool {
	d, err := a.db.GetAccountData(ctx, userID, "", "m.direct")
	if err != nil {
		return nil
	}
	var content map[string][]string
	if json.Unmarshal(d.Content, &content) != nil {
		return nil
	}
	out := map[string]bool{}
	for _, ids := range content {
		for _, id := range ids {
			out[id] = true
		}
	}
	return out
}

// ssListData is what list filters read, loaded once per request and only
// when some filter needs it.
type ssListData struct {
	dms map[string]bool
	// tags: the user's room tags (room ID → tag names), read on first use.
	tags map[string][]string
	// spaceChildren: per space the user is joined to, its m.space.child
	// rooms.
	spaceChildren map[string]map[string]bool
}

// ssFilterAllows applies a list's filters to one room.
func (a *API) ssFilterAllows(ctx context.Context, userID string, f ssFilters, cand *ssCandidate, ld *ssListData, joined map[string]bool) (bool, error) {
	if f.IsDM != nil && *f.IsDM != ld.dms[cand.roomID] {
		return false, nil
	}
	if f.IsInvite != nil && *f.IsInvite != (cand.membership == spec.Invite) {
		return false, nil
	}
	if f.Tags != nil || len(f.NotTags) > 0 {
		if ld.tags == nil {
			if err := a.loadRoomTags(ctx, userID, ld); err != nil {
				return false, err
			}
		}
		tags := ld.tags[cand.roomID]
		for _, t := range f.NotTags {
			if slices.Contains(tags, t) {
				return false, nil
			}
		}
		if f.Tags != nil && !slices.ContainsFunc(f.Tags, func(t string) bool { return slices.Contains(tags, t) }) {
			return false, nil
		}
	}
	if f.Spaces != nil {
		in := false
		for _, space := range f.Spaces {
			children, err := a.spaceChildren(ctx, space, ld, joined)
			if err != nil {
				return false, err
			}
			if children[cand.roomID] {
				in = true
				break
			}
		}
		if !in {
			return false, nil
		}
	}
	if f.IsEncrypted == nil && !f.HasRoomTypes && len(f.NotRoomTypes) == 0 {
		return true, nil
	}
	if err := a.loadRoomFacts(ctx, cand); err != nil {
		return false, err
	}
	if f.IsEncrypted != nil && *f.IsEncrypted != cand.encrypted {
		return false, nil
	}
	sameType := func(t *string) bool {
		return (t == nil && cand.roomType == nil) || (t != nil && cand.roomType != nil && *t == *cand.roomType)
	}
	for _, t := range f.NotRoomTypes {
		if sameType(t) {
			return false, nil
		}
	}
	if f.HasRoomTypes {
		for _, t := range f.RoomTypes {
			if sameType(t) {
				return true, nil
			}
		}
		return false, nil
	}
	return true, nil
}

// loadRoomTags reads the m.tag of every room of the user.
func (a *API) loadRoomTags(ctx context.Context, userID string, ld *ssListData) error {
	ld.tags = map[string][]string{}
	entries, err := a.db.AccountDataSince(ctx, userID, 0)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.RoomID == "" || e.Type != tagType {
			continue
		}
		var tc tagContent
		if json.Unmarshal(e.Content, &tc) != nil {
			continue
		}
		for t := range tc.Tags {
			ld.tags[e.RoomID] = append(ld.tags[e.RoomID], t)
		}
	}
	return nil
}

// spaceChildren is the rooms a space the user is joined to names in its
// m.space.child state (with a via); nothing for other spaces. Subspaces
// are not followed (MSC4186).
func (a *API) spaceChildren(ctx context.Context, space string, ld *ssListData, joined map[string]bool) (map[string]bool, error) {
	if children, ok := ld.spaceChildren[space]; ok {
		return children, nil
	}
	if ld.spaceChildren == nil {
		ld.spaceChildren = map[string]map[string]bool{}
	}
	children := map[string]bool{}
	ld.spaceChildren[space] = children
	if !joined[space] {
		return children, nil
	}
	want, err := a.rooms.CurrentStateOfType(ctx, space, "m.space.child")
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.StateEvents(ctx, want)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		var content struct {
			Via []string `json:"via"`
		}
		if json.Unmarshal(ev.PDU.Content(), &content) == nil && len(content.Via) > 0 {
			children[*ev.StateKey] = true
		}
	}
	return children, nil
}

// loadRoomFacts reads whether a room is encrypted and its type: from the
// current state for rooms on this server, from the stripped state of an
// invite to a room we are not in.
func (a *API) loadRoomFacts(ctx context.Context, cand *ssCandidate) error {
	if cand.loaded {
		return nil
	}
	cand.loaded = true
	var createContent []byte
	if cand.ev.Outlier {
		stripped, err := a.strippedState(ctx, cand.ev)
		if err != nil {
			return err
		}
		for _, raw := range stripped {
			var ev struct {
				Type    string          `json:"type"`
				Content json.RawMessage `json:"content"`
			}
			if json.Unmarshal(raw, &ev) != nil {
				continue
			}
			switch ev.Type {
			case "m.room.encryption":
				cand.encrypted = true
			case spec.MRoomCreate:
				createContent = ev.Content
			}
		}
	} else {
		// Two keys, not the whole state: this runs per candidate room.
		st, err := a.rooms.CurrentStateIDs(ctx, cand.roomID, storage.StateKey{Type: "m.room.encryption"}, storage.StateKey{Type: spec.MRoomCreate})
		if err != nil {
			return err
		}
		_, cand.encrypted = st[storage.StateKey{Type: "m.room.encryption"}]
		if id, ok := st[storage.StateKey{Type: spec.MRoomCreate}]; ok {
			evs, err := a.rooms.StateEvents(ctx, rooms.State{storage.StateKey{Type: spec.MRoomCreate}: id})
			if err != nil {
				return err
			}
			if len(evs) == 1 {
				createContent = evs[0].PDU.Content()
			}
		}
	}
	var create struct {
		Type *string `json:"type"`
	}
	if json.Unmarshal(createContent, &create) == nil && create.Type != nil {
		cand.roomType = create.Type
	}
	return nil
}

// slidingJoinedRoom builds a joined room's result: everything when initial,
// else what changed since the connection last had it (nil when nothing
// did). It returns what the connection has of the room afterwards.
func (a *API) slidingJoinedRoom(ctx context.Context, sreq syncRequest, roomID string, cfg *ssCombined, initial bool, sent ssSentRoom,
	since, to syncstream.Position) (*ssRoom, ssSentRoom, error) {
	// The connection now follows the room with this config: a narrower one
	// is remembered too, so widening it again sends the room in full.
	after := ssSentRoom{Pos: to.Events, Membership: spec.Join, Timeline: cfg.TimelineLimit, States: cfg.stateHashes()}
	from := int64(0)
	if !initial {
		from = sent.Pos
	}
	limit := cfg.TimelineLimit
	rf := &filter.RoomFilter{Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: &limit}}}
	tl, err := a.syncTimeline(ctx, sreq, roomID, from, to.Events, rf)
	if err != nil {
		return nil, after, err
	}
	jr := &joinedRoom{}
	if err := a.syncUnreadCounts(ctx, sreq.userID, roomID, to.Events, rf, jr); err != nil {
		return nil, after, err
	}
	after.Notif, after.Highlight = jr.UnreadNotifications.NotificationCount, jr.UnreadNotifications.HighlightCount
	countsChanged := initial || after.Notif != sent.Notif || after.Highlight != sent.Highlight
	if !initial && len(tl.events) == 0 && !tl.hasState && !tl.timeline.Limited && !countsChanged {
		after.Pos = max(sent.Pos, to.Events)
		return nil, after, nil
	}
	room := &ssRoom{Initial: initial, Timeline: tl.timeline.Events, PrevBatch: tl.timeline.PrevBatch, Limited: tl.timeline.Limited}
	if room.Timeline == nil {
		room.Timeline = []rooms.ClientEvent{}
	}
	if countsChanged {
		room.NotificationCount, room.HighlightCount = &after.Notif, &after.Highlight
	}
	live := 0
	if sreq.since != nil {
		for _, ev := range tl.events {
			if ev.StreamPos > since.Events {
				live++
			}
		}
	}
	room.NumLive = &live

	// required_state: all of it (as of to) for an initial result, else
	// what changed since the room was last sent.
	end, err := a.rooms.SnapshotAtStream(ctx, roomID, to.Events)
	if err != nil {
		return nil, after, err
	}
	var delta rooms.State
	var removed []storage.StateKey
	if initial {
		delta = end
	} else if tl.hasState || tl.timeline.Limited {
		before, err := a.rooms.SnapshotAtStream(ctx, roomID, sent.Pos)
		if err != nil {
			return nil, after, err
		}
		delta = stateDiff(before, end)
		for k := range before {
			if _, ok := end[k]; !ok {
				removed = append(removed, k)
			}
		}
	}
	needed := map[string]bool{}
	if cfg.lazy() {
		for _, ev := range tl.events {
			needed[ev.Sender] = true
			if ev.Type == spec.MRoomMember && ev.StateKey != nil {
				needed[*ev.StateKey] = true
			}
		}
	}
	keep := rooms.State{}
	for k, id := range delta {
		if cfg.matches(k) {
			keep[k] = id
		}
	}
	// Lazy members: those the timeline needs, and (for a complete
	// incremental timeline) every membership change.
	for u := range needed {
		k := storage.StateKey{Type: spec.MRoomMember, StateKey: u}
		if id, ok := end[k]; ok {
			keep[k] = id
		}
	}
	if cfg.lazy() && !initial && !tl.timeline.Limited {
		for k, id := range delta {
			if k.Type == spec.MRoomMember {
				keep[k] = id
			}
		}
	}
	evs, err := a.syncStateEvents(ctx, keep, nil, nil, rooms.Viewer{UserID: sreq.userID, DeviceID: sreq.deviceID}, sreq.userID, true)
	if err != nil {
		return nil, after, err
	}
	sort.Slice(removed, func(i, j int) bool {
		return removed[i].Type < removed[j].Type || removed[i].Type == removed[j].Type && removed[i].StateKey < removed[j].StateKey
	})
	room.RequiredState = make([]any, 0, len(evs)+len(removed))
	for _, ev := range evs {
		room.RequiredState = append(room.RequiredState, ev)
	}
	for _, k := range removed {
		if cfg.matches(k) {
			room.RequiredState = append(room.RequiredState, map[string]string{"type": k.Type, "state_key": k.StateKey})
		}
	}

	// Name, avatar, heroes and counts: on an initial result, or when the
	// state they come from changed.
	nameChanged, membersChanged := initial, initial || tl.memberChange
	for k := range delta {
		switch k.Type {
		case spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias:
			nameChanged = true
		case spec.MRoomMember:
			membersChanged = true
		}
	}
	if nameChanged || membersChanged {
		if err := a.slidingRoomMeta(ctx, sreq.userID, roomID, end, room, nameChanged); err != nil {
			return nil, after, err
		}
	}
	return room, after, nil
}

// slidingRoomMeta fills name, avatar, heroes and member counts from the
// room state end.
func (a *API) slidingRoomMeta(ctx context.Context, userID, roomID string, end rooms.State, room *ssRoom, withName bool) error {
	sum, err := a.roomSummary(ctx, roomID, userID)
	if err != nil {
		return err
	}
	room.JoinedCount, room.InvitedCount = sum.Joined, sum.Invited
	if !withName {
		return nil
	}
	want := rooms.State{}
	for _, t := range []string{spec.MRoomName, "m.room.avatar"} {
		if id, ok := end[storage.StateKey{Type: t}]; ok {
			want[storage.StateKey{Type: t}] = id
		}
	}
	for _, h := range sum.Heroes {
		k := storage.StateKey{Type: spec.MRoomMember, StateKey: h}
		if id, ok := end[k]; ok {
			want[k] = id
		}
	}
	evs, err := a.rooms.StateEvents(ctx, want)
	if err != nil {
		return err
	}
	members := map[string]struct {
		Name   string `json:"displayname"`
		Avatar string `json:"avatar_url"`
	}{}
	for _, ev := range evs {
		var content struct {
			Name   string `json:"name"`
			URL    string `json:"url"`
			DName  string `json:"displayname"`
			Avatar string `json:"avatar_url"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &content)
		switch ev.Type {
		case spec.MRoomName:
			if content.Name != "" {
				room.Name = content.Name
			}
		case "m.room.avatar":
			if content.URL != "" {
				room.Avatar = content.URL
			}
		case spec.MRoomMember:
			m := members[*ev.StateKey]
			m.Name, m.Avatar = content.DName, content.Avatar
			members[*ev.StateKey] = m
		}
	}
	if !room.Initial {
		room.nameRemoved, room.avatarRemoved = room.Name == nil, room.Avatar == nil
	}
	for _, h := range sum.Heroes {
		room.Heroes = append(room.Heroes, ssHero{UserID: h, DisplayName: members[h].Name, AvatarURL: members[h].Avatar})
	}
	return nil
}

// slidingLeftRoom is the last result of a room the user left or was
// removed from: the timeline up to the leave.
func (a *API) slidingLeftRoom(ctx context.Context, sreq syncRequest, cand *ssCandidate, sent ssSentRoom, since syncstream.Position) (*ssRoom, error) {
	room := &ssRoom{Membership: cand.membership, BumpStamp: cand.ev.StreamPos}
	viewer := rooms.Viewer{UserID: sreq.userID, DeviceID: sreq.deviceID}
	if cand.ev.Outlier || sent.Membership != spec.Join {
		// A rejected invite (or rescinded knock): the leave is all there is.
		evs, err := a.rooms.Format(ctx, []*rooms.Event{cand.ev}, viewer)
		if err != nil {
			return nil, err
		}
		room.Timeline, room.Initial = evs, true
		room.RequiredState = []any{evs[0]}
		one := 1
		room.NumLive = &one
		return room, nil
	}
	limit := max(sent.Timeline, 1)
	rf := &filter.RoomFilter{Timeline: &filter.RoomEventFilter{EventFilter: filter.EventFilter{Limit: &limit}}}
	tl, err := a.syncTimeline(ctx, sreq, cand.roomID, sent.Pos, cand.ev.StreamPos, rf)
	if err != nil {
		return nil, err
	}
	room.Timeline, room.PrevBatch, room.Limited = tl.timeline.Events, tl.timeline.PrevBatch, tl.timeline.Limited
	live := 0
	for _, ev := range tl.events {
		if ev.StreamPos > since.Events {
			live++
		}
	}
	room.NumLive = &live
	own, err := a.rooms.Format(ctx, []*rooms.Event{cand.ev}, viewer)
	if err != nil {
		return nil, err
	}
	room.RequiredState = []any{own[0]}
	return room, nil
}

// slidingExtensions fills the extensions the request enabled.
func (a *API) slidingExtensions(ctx context.Context, req ssRequest, sreq syncRequest, since *syncstream.Position, to syncstream.Position,
	next ssConnState, initialRooms, receiptsChanged map[string]bool, resp *ssResponse) error {
	var sincePos syncstream.Position
	if since != nil {
		sincePos = *since
	}
	userID, deviceID := sreq.userID, sreq.deviceID
	if td := req.Ext.ToDevice; td != nil {
		msgs, upTo, err := a.toDeviceBatch(ctx, userID, deviceID, td.Since, td.Since, to.ToDevice, td.Limit)
		if err != nil {
			return err
		}
		resp.Extensions.ToDevice = &ssToDeviceResult{NextBatch: strconv.FormatInt(upTo, 10), Events: msgs}
	}
	if req.Ext.E2EE {
		res := &ssE2EEResult{}
		var err error
		if since != nil {
			if res.DeviceLists, err = a.deviceListChanges(ctx, userID, sincePos, to); err != nil {
				return err
			}
		}
		if res.OTKCounts, res.FallbackKey, err = a.e2ee.DeviceKeyCounts(ctx, userID, deviceID); err != nil {
			return err
		}
		resp.Extensions.E2EE = res
	}
	// The joined rooms of the connection: those receipts, typing and room
	// account data are sent for.
	connRooms := map[string]bool{}
	for id, r := range next.Rooms {
		if r.Membership == spec.Join {
			connRooms[id] = true
		}
	}
	if req.Ext.AccountData {
		res := &ssAccountDataResult{Global: []any{}, Rooms: map[string][]any{}}
		tmp := &syncResponse{}
		roomData := map[string][]any{}
		entries, err := a.db.AccountDataSince(ctx, sreq.userID, sincePos.AccountData)
		if err != nil {
			return err
		}
		if err := a.syncAccountData(ctx, sreq, entries, to, tmp, roomData); err != nil {
			return err
		}
		res.Global = append(res.Global, tmp.AccountData.Events...)
		for id, evs := range roomData {
			if connRooms[id] && !initialRooms[id] {
				res.Rooms[id] = evs
			}
		}
		// Rooms new to the connection get all their account data.
		if since != nil && len(initialRooms) > 0 {
			entries, err := a.db.AccountDataSince(ctx, userID, 0)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if e.RoomID != "" && initialRooms[e.RoomID] && connRooms[e.RoomID] && e.StreamPos <= to.AccountData {
					res.Rooms[e.RoomID] = append(res.Rooms[e.RoomID], map[string]any{"type": e.Type, "content": json.RawMessage(e.Content)})
				}
			}
		} else {
			for id, evs := range roomData {
				if connRooms[id] {
					res.Rooms[id] = evs
				}
			}
		}
		resp.Extensions.AccountData = res
	}
	if req.Ext.Receipts {
		res := &ssRoomsResult{Rooms: map[string]any{}}
		for id := range connRooms {
			from := sincePos.Receipts
			if initialRooms[id] {
				from = 0
			} else if !receiptsChanged[id] {
				continue
			}
			receipts, err := a.db.ReceiptsSince(ctx, id, from, to.Receipts)
			if err != nil {
				return err
			}
			if ev := receiptEvent(receipts, userID); ev != nil {
				res.Rooms[id] = ev
			}
		}
		resp.Extensions.Receipts = res
	}
	if req.Ext.Typing {
		res := &ssRoomsResult{Rooms: map[string]any{}}
		for id := range connRooms {
			users, pos := a.typing.Users(id)
			if initialRooms[id] && len(users) > 0 || !initialRooms[id] && since != nil && pos > sincePos.Typing && pos <= to.Typing {
				res.Rooms[id] = map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}}
			}
		}
		resp.Extensions.Typing = res
	}
	if req.Ext.ThreadSubs > 0 {
		// The latest changes; older ones the client may fetch backwards
		// from prev_batch with the companion endpoint.
		res, more, err := a.threadSubsPage(ctx, userID, sincePos.ThreadSubs, to.ThreadSubs+1, req.Ext.ThreadSubs, since == nil)
		if err != nil {
			return err
		}
		res.PrevBatch = more
		resp.Extensions.ThreadSubs = res
	}
	return nil
}
