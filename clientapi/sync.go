package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/push"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Syncing (client-server API, Syncing): GET /sync.

// maxSyncTimeout caps the long-poll a client may ask for.
const maxSyncTimeout = 5 * time.Minute

// defaultTimelineLimit is the timeline length without a filter limit.
const defaultTimelineLimit = 10

type syncRequest struct {
	userID, deviceID string
	setPresence      string
	since            *syncstream.Position
	fullState        bool
	// useStateAfter asks for state_after (state up to the end of the
	// timeline) instead of state (spec v1.16, MSC4222).
	useStateAfter bool
	filter        filter.Filter
	timeout       time.Duration
	// ignored is the user's m.ignored_user_list, read once per response.
	ignored map[string]bool
}

// GET /_matrix/client/v3/sync
func (a *API) sync(r *http.Request, c accounts.Caller) (any, error) {
	req, err := a.parseSyncRequest(r, c)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	if a.conf().Presence {
		defer a.presence.Syncing(req.userID, req.setPresence)()
	}
	deadline := time.Now().Add(req.timeout)
	for {
		var wake <-chan struct{}
		cancel := func() {}
		if req.since != nil && !req.fullState && time.Now().Before(deadline) {
			var hasNew bool
			wake, hasNew, cancel = a.notifier.Wait(req.userID, req.deviceID, *req.since)
			if hasNew {
				wake = nil
			}
		}
		if wake != nil {
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
		to := a.notifier.Current()
		if req.since != nil {
			// Never behind the token (another process may have made it):
			// what lies between was delivered from there.
			to = to.NotBehind(*req.since)
		}
		resp, err := a.buildSync(ctx, req, to)
		if err != nil {
			return nil, err
		}
		// A wake-up may concern nothing this filter shows: wait again.
		if req.since != nil && resp.empty() && time.Now().Before(deadline) && !req.fullState {
			next := to
			req.since = &next
			continue
		}
		return resp, nil
	}
}

func (a *API) parseSyncRequest(r *http.Request, c accounts.Caller) (syncRequest, error) {
	q := r.URL.Query()
	req := syncRequest{userID: c.UserID, deviceID: c.DeviceID}
	if s := q.Get("since"); s != "" {
		pos, err := syncstream.ParseToken(s)
		if err != nil {
			return req, mxhttp.InvalidParam("Invalid since token %q", s)
		}
		req.since = &pos
	}
	switch q.Get("full_state") {
	case "", "false":
	case "true":
		req.fullState = true
	default:
		return req, mxhttp.InvalidParam("full_state must be true or false")
	}
	switch q.Get("use_state_after") {
	case "", "false":
	case "true":
		req.useStateAfter = true
	default:
		return req, mxhttp.InvalidParam("use_state_after must be true or false")
	}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return req, mxhttp.InvalidParam("timeout must be a non-negative integer")
		}
		req.timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	if f := q.Get("filter"); f != "" {
		var raw []byte
		if strings.HasPrefix(strings.TrimSpace(f), "{") {
			raw = []byte(f)
		} else {
			b, err := a.db.GetFilter(r.Context(), c.UserID, f)
			if errors.Is(err, storage.ErrNotFound) {
				return req, mxhttp.NotFound("Unknown filter %q", f)
			}
			if err != nil {
				return req, err
			}
			raw = b
		}
		parsed, err := filter.Parse(raw)
		if err != nil {
			return req, err
		}
		req.filter = parsed
	}
	req.setPresence = q.Get("set_presence")
	switch req.setPresence {
	case "":
		req.setPresence = "online"
	case "online", "offline", "unavailable":
	default:
		return req, mxhttp.InvalidParam("set_presence must be online, offline or unavailable")
	}
	return req, nil
}

type syncResponse struct {
	NextBatch   string           `json:"next_batch"`
	Rooms       syncRooms        `json:"rooms"`
	AccountData eventList        `json:"account_data"`
	Presence    eventList        `json:"presence"`
	ToDevice    eventList        `json:"to_device"`
	DeviceLists *syncDeviceLists `json:"device_lists,omitempty"`
	OTKCounts   map[string]int   `json:"device_one_time_keys_count"`
	FallbackKey []string         `json:"device_unused_fallback_key_types"`
}

type eventList struct {
	Events []any `json:"events"`
}

type syncDeviceLists struct {
	Changed []string `json:"changed,omitempty"`
	Left    []string `json:"left,omitempty"`
}

// syncRooms leaves out empty sections, as Synapse does; clients treat a
// missing section as empty.
type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join,omitempty"`
	Invite map[string]*invitedRoom `json:"invite,omitempty"`
	Leave  map[string]*leftRoom    `json:"leave,omitempty"`
	Knock  map[string]*knockedRoom `json:"knock,omitempty"`
}

type timeline struct {
	Events    []rooms.ClientEvent `json:"events"`
	Limited   bool                `json:"limited"`
	PrevBatch string              `json:"prev_batch,omitempty"`
}

type stateList struct {
	Events []rooms.ClientEvent `json:"events"`
}

type roomSummary struct {
	Heroes  []string `json:"m.heroes,omitempty"`
	Joined  *int     `json:"m.joined_member_count,omitempty"`
	Invited *int     `json:"m.invited_member_count,omitempty"`
}

type joinedRoom struct {
	Timeline timeline `json:"timeline"`
	// Exactly one of State and StateAfter is set, by use_state_after.
	State       *stateList   `json:"state,omitempty"`
	StateAfter  *stateList   `json:"state_after,omitempty"`
	Ephemeral   eventList    `json:"ephemeral"`
	AccountData eventList    `json:"account_data"`
	Summary     *roomSummary `json:"summary,omitempty"`
	// Counts of notifications after the user's read receipts (push
	// module); per thread only when the timeline filter asks.
	UnreadNotifications       unreadCounts            `json:"unread_notifications"`
	UnreadThreadNotifications map[string]unreadCounts `json:"unread_thread_notifications,omitempty"`
}

type unreadCounts struct {
	NotificationCount int `json:"notification_count"`
	HighlightCount    int `json:"highlight_count"`
}

type invitedRoom struct {
	InviteState struct {
		Events []json.RawMessage `json:"events"`
	} `json:"invite_state"`
}

type knockedRoom struct {
	KnockState struct {
		Events []json.RawMessage `json:"events"`
	} `json:"knock_state"`
}

type leftRoom struct {
	Timeline    timeline   `json:"timeline"`
	State       *stateList `json:"state,omitempty"`
	StateAfter  *stateList `json:"state_after,omitempty"`
	AccountData eventList  `json:"account_data"`
}

// stateEvents is the room's state section, whichever form it has.
func (jr *joinedRoom) stateEvents() []rooms.ClientEvent {
	if jr.StateAfter != nil {
		return jr.StateAfter.Events
	}
	return jr.State.Events
}

func (s *syncResponse) empty() bool {
	return len(s.Rooms.Join) == 0 && len(s.Rooms.Invite) == 0 && len(s.Rooms.Leave) == 0 && len(s.Rooms.Knock) == 0 &&
		len(s.AccountData.Events) == 0 && len(s.Presence.Events) == 0 && len(s.ToDevice.Events) == 0 &&
		(s.DeviceLists == nil || len(s.DeviceLists.Changed)+len(s.DeviceLists.Left) == 0)
}

// buildSync computes the response for positions (since, to].
func (a *API) buildSync(ctx context.Context, req syncRequest, to syncstream.Position) (*syncResponse, error) {
	resp := &syncResponse{
		NextBatch: to.String(),
		Rooms: syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{},
			Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		AccountData: eventList{Events: []any{}}, Presence: eventList{Events: []any{}}, ToDevice: eventList{Events: []any{}},
	}
	var since syncstream.Position
	if req.since != nil {
		since = *req.since
	}
	initial := req.since == nil
	roomFilter := req.filter.Room
	if roomFilter == nil {
		roomFilter = &filter.RoomFilter{}
	}

	// Account data, global and per room, and the ignored users with it.
	entries, ignoredList, err := a.db.AccountDataSinceAnd(ctx, req.userID, since.AccountData, ignoredUsersType)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	req.ignored = parseIgnored(ignoredList.Content)
	roomData := map[string][]any{}
	if err := a.syncAccountData(ctx, req, entries, to, resp, roomData); err != nil {
		return nil, err
	}

	// Partial-state rooms (MSC3902) come with the memberships: left out
	// of eager syncs until their state is complete, then shown as if
	// joined then (full state); lazy-loading syncs show them all along.
	memberships, partial, err := storage.RoomsOfUserWithPartialState(ctx, a.db.Read(), req.userID, since.Events,
		spec.Join, spec.Invite, spec.Leave, spec.Ban, spec.Knock)
	if err != nil {
		return nil, err
	}
	// newlyShared are users who came to share a room with the syncing user
	// in this window: their presence is sent even if it did not change.
	newlyShared := map[string]bool{}
	var changed, receiptsChanged map[string]bool
	// memberMoves: some m.room.member event in (since, to], which device
	// lists look for.
	var memberMoves bool
	// A stream that did not move needs no query.
	if !initial && since.Events < to.Events {
		if changed, memberMoves, err = storage.RoomsWithEventsAndMembersBetween(ctx, a.db.Read(), since.Events, to.Events); err != nil {
			return nil, err
		}
	}
	if !initial && since.Receipts < to.Receipts {
		if receiptsChanged, err = a.db.RoomsWithReceiptsBetween(ctx, since.Receipts, to.Receipts); err != nil {
			return nil, err
		}
	}
	lazy := roomFilter.State != nil && roomFilter.State.LazyLoadMembers
	for _, m := range memberships {
		if !filter.AllowsRoom(roomFilter.Rooms, roomFilter.NotRooms, m.RoomID) {
			continue
		}
		completedPos, wasPartial := partial[m.RoomID]
		if wasPartial && !lazy && m.Membership == spec.Join && (completedPos == nil || *completedPos > to.Events) {
			continue
		}
		// The room became complete in this window: eager syncs show it as
		// if joined then; a lazy-loading sync, which showed it while
		// partial, gets its whole state again (members lazily), for the
		// resync brought state the partial state lacked (rooms'
		// deferredState) or had wrong.
		resynced := wasPartial && !initial && completedPos != nil && *completedPos <= to.Events
		memberEv, err := a.rooms.Event(ctx, m.EventID)
		if err != nil {
			return nil, err
		}
		if memberEv.StreamPos > to.Events {
			continue // arrived after this sync's snapshot of the streams
		}
		newMembership := initial || memberEv.StreamPos > since.Events
		switch m.Membership {
		case spec.Join:
			_, typingPos := a.typing.Users(m.RoomID)
			typingChanged := typingPos > since.Typing && typingPos <= to.Typing
			if !initial && !changed[m.RoomID] && !req.fullState && len(roomData[m.RoomID]) == 0 && !receiptsChanged[m.RoomID] && !typingChanged && !resynced {
				continue
			}
			// Full state for a first sync, a full_state request or a room
			// joined since the last sync (or whose resync ended since).
			joinedNow := resynced || newMembership && (memberEv.PrevContent == nil || !strings.Contains(*memberEv.PrevContent, `"join"`))
			roomSince := since
			if resynced && !lazy {
				// Its timeline too is as a first sync's: what came while
				// eager syncs left the room out.
				roomSince = syncstream.Position{}
			}
			jr, err := a.syncJoinedRoom(ctx, req, m.RoomID, roomSince, to, initial || req.fullState || joinedNow, roomFilter)
			if err != nil {
				return nil, err
			}
			if !initial {
				if joinedNow || req.fullState {
					for _, e := range jr.stateEvents() {
						if e.Type == spec.MRoomMember && e.StateKey != nil {
							newlyShared[*e.StateKey] = true
						}
					}
				}
				for _, e := range jr.Timeline.Events {
					if e.Type == spec.MRoomMember && e.StateKey != nil {
						newlyShared[*e.StateKey] = true
					}
				}
			}
			jr.AccountData.Events = append(jr.AccountData.Events, roomData[m.RoomID]...)
			if jr.AccountData.Events == nil {
				jr.AccountData.Events = []any{}
			}
			if jr.Ephemeral.Events, err = a.syncEphemeral(ctx, req, m.RoomID, since, to, initial || typingChanged, initial || receiptsChanged[m.RoomID]); err != nil {
				return nil, err
			}
			if !initial && !req.fullState && !joinedNow && len(jr.Timeline.Events) == 0 && len(jr.stateEvents()) == 0 &&
				len(roomData[m.RoomID]) == 0 && len(jr.Ephemeral.Events) == 0 {
				continue
			}
			resp.Rooms.Join[m.RoomID] = jr
		case spec.Invite, spec.Knock:
			if !newMembership || m.Membership == spec.Invite && req.ignored[memberEv.Sender] {
				continue // invites from ignored users are dropped (Ignoring users)
			}
			if m.Membership == spec.Invite {
				// Invites the user's invite permission blocks or ignores
				// are not served (Invite permission); they show again if
				// the setting changes.
				if v, err := a.rooms.InvitePermission(ctx, req.userID, memberEv.Sender); err != nil {
					return nil, err
				} else if v != rooms.InviteAllowed {
					continue
				}
			}
			stripped, err := a.strippedState(ctx, memberEv)
			if err != nil {
				return nil, err
			}
			if m.Membership == spec.Invite {
				ir := &invitedRoom{}
				ir.InviteState.Events = stripped
				resp.Rooms.Invite[m.RoomID] = ir
			} else {
				kr := &knockedRoom{}
				kr.KnockState.Events = stripped
				resp.Rooms.Knock[m.RoomID] = kr
			}
		case spec.Leave, spec.Ban:
			// Without include_leave an initial sync still shows the rooms
			// the user was kicked or banned from (as Synapse does), so a
			// client learns of it; only leaving by choice drops the room.
			if !newMembership || (initial && !roomFilter.IncludeLeave && memberEv.Sender == req.userID) {
				continue
			}
			// A forgotten room stays out of initial syncs; an incremental sync
			// still tells other devices about the leave (as Synapse does).
			if forgotten, err := storage.IsForgotten(ctx, a.db.Read(), req.userID, m.RoomID); err != nil || (forgotten && initial) {
				if err != nil {
					return nil, err
				}
				continue
			}
			lr, err := a.syncLeftRoom(ctx, req, m.RoomID, since, memberEv, roomFilter)
			if err != nil {
				return nil, err
			}
			lr.AccountData.Events = append([]any{}, roomData[m.RoomID]...)
			resp.Rooms.Leave[m.RoomID] = lr
		}
	}
	if a.conf().Presence {
		if err := a.syncPresence(ctx, req, since, to, resp, memberships, newlyShared); err != nil {
			return nil, err
		}
	}
	if err := a.syncE2EE(ctx, req, since, to, memberMoves, resp); err != nil {
		return nil, err
	}
	return resp, nil
}

// maxToDevicePerSync bounds the to-device messages one sync hands out; the
// rest follow in the next sync.
const maxToDevicePerSync = 100

// syncE2EE adds to-device messages, device-list changes and key counts.
// A sync from a token acknowledges the to-device messages that token
// covered: they are deleted from the device's inbox only then, so nothing
// is lost if a response never reaches the device.
func (a *API) syncE2EE(ctx context.Context, req syncRequest, since, to syncstream.Position, memberMoves bool, resp *syncResponse) error {
	var ack int64
	if req.since != nil {
		ack = since.ToDevice
	}
	msgs, upTo, err := a.toDeviceBatch(ctx, req.userID, req.deviceID, ack, since.ToDevice, to.ToDevice, maxToDevicePerSync)
	if err != nil {
		return err
	}
	resp.ToDevice.Events = append(resp.ToDevice.Events, msgs...)
	if upTo < to.ToDevice {
		// More are waiting: hand out a token that stops after the last one.
		next := to
		next.ToDevice = upTo
		resp.NextBatch = next.String()
	}
	if req.since != nil {
		from := since
		if !memberMoves {
			from.Events = to.Events // no membership changed: none to look for
		}
		if resp.DeviceLists, err = a.deviceListChanges(ctx, req.userID, from, to); err != nil {
			return err
		}
	}
	resp.OTKCounts, resp.FallbackKey, err = a.e2ee.DeviceKeyCounts(ctx, req.userID, req.deviceID)
	return err
}

// toDeviceBatch acknowledges (deletes) a device's to-device messages up to
// ack, then returns up to limit of those in (from, to] and the position
// the batch reaches (to, or the last message's when the limit cut it).
// /sync and sliding sync's to_device extension share it.
func (a *API) toDeviceBatch(ctx context.Context, userID, deviceID string, ack, from, to int64, limit int) ([]any, int64, error) {
	if ack > 0 {
		if err := a.e2ee.AckInbox(ctx, userID, deviceID, ack); err != nil {
			return nil, 0, err
		}
	}
	if from >= to {
		return []any{}, from, nil // nothing new: no query
	}
	msgs, upTo, err := a.e2ee.InboxBetween(ctx, userID, deviceID, from, to, limit)
	if err != nil {
		return nil, 0, err
	}
	out := make([]any, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, m)
	}
	return out, upTo, nil
}

// deviceListChanges is the users whose device lists changed (or who no
// longer share a room) in (since, to]; nil when none.
func (a *API) deviceListChanges(ctx context.Context, userID string, since, to syncstream.Position) (*syncDeviceLists, error) {
	changed, left, err := a.e2ee.DeviceListChangesSince(ctx, userID,
		e2ee.Positions{Events: since.Events, DeviceLists: since.DeviceLists}, e2ee.Positions{Events: to.Events, DeviceLists: to.DeviceLists})
	if err != nil || len(changed)+len(left) == 0 {
		return nil, err
	}
	return &syncDeviceLists{Changed: changed, Left: left}, nil
}

// syncEphemeral gives a joined room's typing (when it changed) and the
// receipts that changed in (since, to] (withReceipts: the room has some
// there, or a first sync). What the filter leaves out is not read.
func (a *API) syncEphemeral(ctx context.Context, req syncRequest, roomID string, since, to syncstream.Position, withTyping, withReceipts bool) ([]any, error) {
	out := []any{}
	var ef *filter.RoomEventFilter
	if req.filter.Room != nil {
		ef = req.filter.Room.Ephemeral
	}
	withTyping = withTyping && ef.AllowsType("m.typing")
	withReceipts = withReceipts && ef.AllowsType("m.receipt")
	if withTyping {
		// A first sync tells only who is typing now; an incremental one also
		// that typing stopped (an empty list).
		if users, _ := a.typing.Users(roomID); len(users) > 0 || req.since != nil {
			out = append(out, map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}})
		}
	}
	if withReceipts {
		from := since.Receipts
		if req.since == nil {
			from = 0
		}
		receipts, err := a.db.ReceiptsSince(ctx, roomID, from, to.Receipts)
		if err != nil {
			return nil, err
		}
		if ev := receiptEvent(receipts, req.userID); ev != nil {
			out = append(out, ev)
		}
	}
	if req.filter.Room != nil && req.filter.Room.Ephemeral != nil {
		kept := out[:0]
		for _, e := range out {
			if req.filter.Room.Ephemeral.AllowsEvent(e.(map[string]any)["type"].(string), "", nil) {
				kept = append(kept, e)
			}
		}
		out = kept
	}
	return out, nil
}

// syncPresence lists presence changes of the user and of users sharing a
// joined room with them.
func (a *API) syncPresence(ctx context.Context, req syncRequest, since, to syncstream.Position, resp *syncResponse, memberships []storage.Membership, newlyShared map[string]bool) error {
	if !req.filter.Presence.AllowsType("m.presence") {
		return nil // the filter drops them all: no need to look
	}
	changed := a.presence.ChangedSince(since.Presence, to.Presence)
	seen := map[string]bool{}
	for _, u := range changed {
		seen[u] = true
	}
	for u := range newlyShared {
		if !seen[u] && u != req.userID && a.presence.Get(u).Pos > 0 {
			changed = append(changed, u)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	visible := map[string]bool{req.userID: true}
	for _, m := range memberships {
		if m.Membership != spec.Join {
			continue
		}
		members, err := storage.MembersOfRoom(ctx, a.db.Read(), m.RoomID)
		if err != nil {
			return err
		}
		for _, mm := range members {
			if mm.Membership == spec.Join {
				visible[mm.UserID] = true
			}
		}
	}
	sort.Strings(changed)
	for _, u := range changed {
		if !visible[u] || !req.filter.Presence.Allows("m.presence", u) {
			continue
		}
		resp.Presence.Events = append(resp.Presence.Events, map[string]any{
			"type": "m.presence", "sender": u, "content": presenceContent(a.presence.Get(u), false),
		})
	}
	return nil
}

// syncAccountData fills global account data and collects per-room entries.
// entries are the user's account data changed since the sync's token.
func (a *API) syncAccountData(ctx context.Context, req syncRequest, entries []storage.AccountData, to syncstream.Position, resp *syncResponse, roomData map[string][]any) error {
	sawPushRules := false
	for _, e := range entries {
		if e.StreamPos > to.AccountData {
			continue
		}
		ev := map[string]any{"type": e.Type, "content": json.RawMessage(e.Content)}
		if e.RoomID == "" {
			if !req.filter.AccountData.Allows(e.Type, "") {
				continue
			}
			if e.Type == pushRulesType {
				sawPushRules = true
				rules, err := a.pushRulesContent(ctx, req.userID)
				if err != nil {
					return err
				}
				ev["content"] = rules
			}
			resp.AccountData.Events = append(resp.AccountData.Events, ev)
		} else {
			if req.filter.Room != nil && !req.filter.Room.AccountData.AllowsEvent(e.Type, "", nil) {
				continue
			}
			roomData[e.RoomID] = append(roomData[e.RoomID], ev)
		}
	}
	// A user who never changed a push rule has no m.push_rules row; the
	// first sync still gives the default rules.
	if req.since == nil && !sawPushRules && req.filter.AccountData.Allows(pushRulesType, "") {
		rules, err := a.pushRulesContent(ctx, req.userID)
		if err != nil {
			return err
		}
		resp.AccountData.Events = append(resp.AccountData.Events, map[string]any{"type": pushRulesType, "content": rules})
	}
	return nil
}

// syncJoinedRoom builds one joined room's section.
func (a *API) syncJoinedRoom(ctx context.Context, req syncRequest, roomID string, since, to syncstream.Position, fullState bool, rf *filter.RoomFilter) (*joinedRoom, error) {
	from := since.Events
	if fullState {
		from = 0
	}
	tl, err := a.syncTimeline(ctx, req, roomID, from, to.Events, rf)
	if err != nil {
		return nil, err
	}
	jr := &joinedRoom{Timeline: tl.timeline, Ephemeral: eventList{Events: []any{}}, AccountData: eventList{Events: []any{}}}
	if req.useStateAfter {
		evs, err := a.syncStateAfter(ctx, req, roomID, since.Events, to.Events, fullState, tl, rf.State)
		if err != nil {
			return nil, err
		}
		jr.StateAfter = &stateList{Events: evs}
	} else if err := a.syncStateBefore(ctx, req, roomID, since.Events, to.Events, fullState, tl, rf.State, jr); err != nil {
		return nil, err
	}
	if fullState || tl.memberChange {
		if jr.Summary, err = a.roomSummary(ctx, roomID, req.userID); err != nil {
			return nil, err
		}
	}
	if err := a.syncUnreadCounts(ctx, req.userID, roomID, to.Events, rf, jr); err != nil {
		return nil, err
	}
	return jr, nil
}

// syncStateBefore fills state: the full state at the start of the
// timeline, or what changed between since and the start of a limited
// timeline.
func (a *API) syncStateBefore(ctx context.Context, req syncRequest, roomID string, since, to int64, fullState bool, tl syncedTimeline, sf *filter.RoomEventFilter, jr *joinedRoom) error {
	viewer := rooms.Viewer{UserID: req.userID, DeviceID: req.deviceID}
	startState, err := a.stateAtTimelineStart(ctx, roomID, tl.events, to)
	if err != nil {
		return err
	}
	var state rooms.State
	switch {
	case fullState:
		state = startState
	case tl.timeline.Limited:
		before, err := a.rooms.SnapshotAtStream(ctx, roomID, since)
		if err != nil {
			return err
		}
		state = stateDiff(before, startState)
	}
	if sf != nil && sf.LazyLoadMembers && !fullState {
		extra, err := a.newSenderMemberships(ctx, tl.events, since)
		if err != nil {
			return err
		}
		for k, id := range extra {
			if state == nil {
				state = rooms.State{}
			}
			if _, ok := state[k]; !ok {
				state[k] = id
			}
		}
	}
	evs, err := a.syncStateEvents(ctx, state, tl.events, sf, viewer, req.userID, false)
	jr.State = &stateList{Events: evs}
	return err
}

// newSenderMemberships are, for a lazy-loading incremental sync, the
// memberships of the timeline's senders that this server came to hold
// after since: in a partial-state room (MSC3902) a sender's membership
// arrives with their event (its auth events) or with the resync, never
// as a change of state the diff would show. Taken from each event's auth
// events, which name the sender's membership.
func (a *API) newSenderMemberships(ctx context.Context, tl []*rooms.Event, since int64) (rooms.State, error) {
	out := rooms.State{}
	inTimeline := map[string]bool{}
	for _, ev := range tl {
		inTimeline[ev.EventID] = true
	}
	auth, err := a.authEventsOf(ctx, tl)
	if err != nil {
		return nil, err
	}
	for _, ev := range tl {
		k := storage.StateKey{Type: spec.MRoomMember, StateKey: ev.Sender}
		if _, ok := out[k]; ok {
			continue
		}
		for _, id := range ev.PDU.AuthEventIDs() {
			if aev := auth[id]; aev != nil && aev.Type == spec.MRoomMember && aev.StateKey != nil && *aev.StateKey == ev.Sender && aev.StreamPos > since && !inTimeline[id] {
				out[k] = id
			}
		}
	}
	return out, nil
}

// authEventsOf reads the auth events of evs in one lookup.
func (a *API) authEventsOf(ctx context.Context, evs []*rooms.Event) (map[string]*rooms.Event, error) {
	var ids []string
	seen := map[string]bool{}
	for _, ev := range evs {
		for _, id := range ev.PDU.AuthEventIDs() {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	return a.rooms.Events(ctx, a.db.Read(), ids)
}

// syncStateAfter is state_after: the full state at the end of the timeline
// (stream position to), or what changed between since and there. Unlike
// state it repeats state events that are in the timeline, since clients
// take their state from state_after alone.
func (a *API) syncStateAfter(ctx context.Context, req syncRequest, roomID string, since, to int64, fullState bool, tl syncedTimeline, sf *filter.RoomEventFilter) ([]rooms.ClientEvent, error) {
	if !fullState && !tl.timeline.Limited && !tl.hasState {
		return []rooms.ClientEvent{}, nil // nothing in (since, to] changed state
	}
	end, err := a.rooms.SnapshotAtStream(ctx, roomID, to)
	if err != nil {
		return nil, err
	}
	if !fullState {
		before, err := a.rooms.SnapshotAtStream(ctx, roomID, since)
		if err != nil {
			return nil, err
		}
		end = stateDiff(before, end)
	}
	return a.syncStateEvents(ctx, end, tl.events, sf, rooms.Viewer{UserID: req.userID, DeviceID: req.deviceID}, req.userID, true)
}

// stateDiff is the entries of after that differ from before.
func stateDiff(before, after rooms.State) rooms.State {
	out := rooms.State{}
	for k, id := range after {
		if before[k] != id {
			out[k] = id
		}
	}
	return out
}

// syncUnreadCounts fills a joined room's notification counts of the
// events up to the sync's position. They are stored in the transaction of
// the events they count (push.Record), so they include every event the
// sync shows without waiting for anything.
func (a *API) syncUnreadCounts(ctx context.Context, userID, roomID string, to int64, rf *filter.RoomFilter, jr *joinedRoom) error {
	notif, highlight, perThread, err := a.push.UnreadCountsAt(ctx, userID, roomID, to)
	if err != nil {
		return err
	}
	if rf.Timeline == nil || !rf.Timeline.UnreadThreadNotifications {
		jr.UnreadNotifications = unreadCounts{NotificationCount: notif, HighlightCount: highlight}
		return nil
	}
	for thread, c := range perThread {
		if thread == push.MainThread {
			jr.UnreadNotifications = unreadCounts{NotificationCount: c[0], HighlightCount: c[1]}
			continue
		}
		if jr.UnreadThreadNotifications == nil {
			jr.UnreadThreadNotifications = map[string]unreadCounts{}
		}
		jr.UnreadThreadNotifications[thread] = unreadCounts{NotificationCount: c[0], HighlightCount: c[1]}
	}
	return nil
}

type syncedTimeline struct {
	timeline     timeline
	events       []*rooms.Event
	memberChange bool
	// hasState: some event in the range, shown or not, is a state event.
	hasState bool
}

// syncTimeline returns the room's visible events in (from, to], at most the
// filter's limit, with prev_batch pointing before the first when the limit
// cut the timeline short.
func (a *API) syncTimeline(ctx context.Context, req syncRequest, roomID string, from, to int64, rf *filter.RoomFilter) (syncedTimeline, error) {
	limit := rf.Timeline.LimitOr(defaultTimelineLimit)
	evs, limited, err := a.rooms.Recent(ctx, roomID, from, to, limit)
	if err != nil {
		return syncedTimeline{}, err
	}
	visible, err := a.rooms.Visible(ctx, req.userID, evs)
	if err != nil {
		return syncedTimeline{}, err
	}
	var out syncedTimeline
	out.timeline.Limited = limited
	for _, ev := range evs {
		out.hasState = out.hasState || ev.IsState()
	}
	for _, ev := range visible {
		if ev.Type == spec.MRoomMember {
			out.memberChange = true
		}
		// Ignored users' non-state events are left out; their state events
		// are always sent (client-server API, Ignoring Users).
		if rf.Timeline.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) && !(req.ignored[ev.Sender] && !ev.IsState()) {
			out.events = append(out.events, ev)
		}
	}
	switch {
	case len(evs) > 0 && !limited:
		// A complete timeline's prev_batch is the sync point itself, as
		// on Synapse: /members?at= then gives the members as this sync
		// left them, and paging back from it re-reads the timeline first.
		out.timeline.PrevBatch = rooms.BeforeStream(to + 1).String()
	case len(evs) > 0:
		out.timeline.PrevBatch = rooms.BeforeStream(evs[0].StreamPos).String()
	default:
		if end, err := a.rooms.End(ctx, roomID); err == nil {
			out.timeline.PrevBatch = end.String()
		}
	}
	// Every event up to to is committed (a sync's position, or a leave
	// that is): the members of a room woken together share its bundles.
	formatted, err := a.rooms.FormatAt(ctx, out.events, rooms.Viewer{UserID: req.userID, DeviceID: req.deviceID}, to)
	if err != nil {
		return syncedTimeline{}, err
	}
	out.timeline.Events = formatted
	return out, nil
}

// ignoredUsersType is the account data listing the users one ignores.
const ignoredUsersType = "m.ignored_user_list"

// ignoredUsers reads m.ignored_user_list.
func (a *API) ignoredUsers(ctx context.Context, userID string) map[string]bool {
	d, err := a.db.GetAccountData(ctx, userID, "", ignoredUsersType)
	if err != nil {
		return nil
	}
	return parseIgnored(d.Content)
}

// parseIgnored gives the users an m.ignored_user_list names (nil for
// none or for content that is not one).
func parseIgnored(list []byte) map[string]bool {
	if list == nil {
		return nil
	}
	var content struct {
		IgnoredUsers map[string]json.RawMessage `json:"ignored_users"`
	}
	if json.Unmarshal(list, &content) != nil {
		return nil
	}
	out := make(map[string]bool, len(content.IgnoredUsers))
	for u := range content.IgnoredUsers {
		out[u] = true
	}
	return out
}

// stateAtTimelineStart is the state before the first timeline event, or
// the state at stream position to when the timeline is empty.
func (a *API) stateAtTimelineStart(ctx context.Context, roomID string, tl []*rooms.Event, to int64) (rooms.State, error) {
	if len(tl) > 0 {
		return a.rooms.StateAt(ctx, tl[0].SnapshotBefore)
	}
	return a.rooms.SnapshotAtStream(ctx, roomID, to)
}

// syncStateEvents formats state entries through the state filter, keeping
// only the members the timeline needs when lazy-loading. Events already in
// the timeline are left out unless withTimeline (state_after).
func (a *API) syncStateEvents(ctx context.Context, st rooms.State, tl []*rooms.Event, sf *filter.RoomEventFilter, viewer rooms.Viewer, userID string, withTimeline bool) ([]rooms.ClientEvent, error) {
	if len(st) == 0 {
		return []rooms.ClientEvent{}, nil
	}
	lazy := sf != nil && sf.LazyLoadMembers
	needed := map[string]bool{userID: true}
	for _, ev := range tl {
		needed[ev.Sender] = true
	}
	inTimeline := map[string]bool{}
	for _, ev := range tl {
		inTimeline[ev.EventID] = true
	}
	keep := rooms.State{}
	for k, id := range st {
		if inTimeline[id] && !withTimeline {
			continue
		}
		if lazy && k.Type == spec.MRoomMember && !needed[k.StateKey] {
			continue
		}
		keep[k] = id
	}
	if lazy {
		// A sender missing from the state (a partial-state room, MSC3902):
		// their membership is among the event's auth events.
		var missing []*rooms.Event
		for _, ev := range tl {
			if _, ok := st[storage.StateKey{Type: spec.MRoomMember, StateKey: ev.Sender}]; !ok {
				missing = append(missing, ev)
			}
		}
		auth, err := a.authEventsOf(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, ev := range missing {
			k := storage.StateKey{Type: spec.MRoomMember, StateKey: ev.Sender}
			if keep[k] != "" {
				continue
			}
			for _, id := range ev.PDU.AuthEventIDs() {
				if aev := auth[id]; aev != nil && aev.Type == spec.MRoomMember && aev.StateKey != nil && *aev.StateKey == ev.Sender && !inTimeline[id] {
					keep[k] = id
				}
			}
		}
	}
	evs, err := a.rooms.StateEvents(ctx, keep)
	if err != nil {
		return nil, err
	}
	var out []*rooms.Event
	for _, ev := range evs {
		if sf.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) {
			out = append(out, ev)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StreamPos < out[j].StreamPos })
	formatted, err := a.rooms.Format(ctx, out, viewer)
	if formatted == nil {
		formatted = []rooms.ClientEvent{}
	}
	return formatted, err
}

// roomSummary gives member counts and, for rooms without a name or
// canonical alias, up to five heroes (client-server API, Calculating the
// display name for a room).
func (a *API) roomSummary(ctx context.Context, roomID, userID string) (*roomSummary, error) {
	members, err := storage.MembersOfRoom(ctx, a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	joined, invited := 0, 0
	var heroes []string
	for _, m := range members {
		switch m.Membership {
		case spec.Join:
			joined++
		case spec.Invite:
			invited++
		default:
			continue
		}
		if m.UserID != userID {
			heroes = append(heroes, m.UserID)
		}
	}
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	s := &roomSummary{Joined: &joined, Invited: &invited}
	st, err := a.rooms.CurrentStateIDs(ctx, roomID, storage.StateKey{Type: spec.MRoomName}, storage.StateKey{Type: spec.MRoomCanonicalAlias})
	if err != nil {
		return nil, err
	}
	_, named := st[storage.StateKey{Type: spec.MRoomName}]
	_, aliased := st[storage.StateKey{Type: spec.MRoomCanonicalAlias}]
	if !named && !aliased {
		s.Heroes = heroes
		if s.Heroes == nil {
			s.Heroes = []string{}
		}
	}
	return s, nil
}

// strippedState is what an invitee or knocker may see of a room: the
// spec's recommended state events at the membership event, plus that event.
func (a *API) strippedState(ctx context.Context, memberEv *rooms.Event) ([]json.RawMessage, error) {
	if memberEv.Outlier {
		// An invite to a room we are not in: what the inviting server sent.
		remote, err := a.rooms.RemoteInviteState(ctx, memberEv.RoomID, *memberEv.StateKey)
		if err != nil {
			return nil, err
		}
		return append(remote, rooms.StrippedJSON(memberEv.PDU)), nil
	}
	st, err := a.rooms.StateAt(ctx, memberEv.SnapshotAfter)
	if err != nil {
		return nil, err
	}
	keep := rooms.State{}
	for _, typ := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias, "m.room.encryption", spec.MRoomTopic} {
		if id, ok := st[storage.StateKey{Type: typ}]; ok {
			keep[storage.StateKey{Type: typ}] = id
		}
	}
	if id, ok := st[storage.StateKey{Type: spec.MRoomMember, StateKey: memberEv.PDU.SenderID().ToUserID().String()}]; ok && memberEv.Sender != *memberEv.StateKey {
		keep[storage.StateKey{Type: spec.MRoomMember, StateKey: memberEv.Sender}] = id
	}
	evs, err := a.rooms.StateEvents(ctx, keep)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs)+1)
	for _, ev := range evs {
		out = append(out, rooms.StrippedJSON(ev.PDU))
	}
	out = append(out, rooms.StrippedJSON(memberEv.PDU))
	return out, nil
}

// syncLeftRoom gives the timeline up to and including the user's leave.
func (a *API) syncLeftRoom(ctx context.Context, req syncRequest, roomID string, since syncstream.Position, leave *rooms.Event, rf *filter.RoomFilter) (*leftRoom, error) {
	viewer := rooms.Viewer{UserID: req.userID, DeviceID: req.deviceID}
	if leave.Outlier {
		// The leave that rejected an invite to (or rescinded a knock on) a
		// room we are not in: it is all we have of the room.
		evs, err := a.rooms.Format(ctx, []*rooms.Event{leave}, viewer)
		if err != nil {
			return nil, err
		}
		lr := &leftRoom{Timeline: timeline{Events: evs}, AccountData: eventList{Events: []any{}}}
		if req.useStateAfter {
			lr.StateAfter = &stateList{Events: evs} // the leave is the state we know
		} else {
			lr.State = &stateList{Events: []rooms.ClientEvent{}}
		}
		return lr, nil
	}
	tl, err := a.syncTimeline(ctx, req, roomID, since.Events, leave.StreamPos, rf)
	if err != nil {
		return nil, err
	}
	lr := &leftRoom{Timeline: tl.timeline, AccountData: eventList{Events: []any{}}}
	full := req.since == nil || req.fullState
	if req.useStateAfter {
		evs, err := a.syncStateAfter(ctx, req, roomID, since.Events, leave.StreamPos, full, tl, rf.State)
		lr.StateAfter = &stateList{Events: evs}
		return lr, err
	}
	var state rooms.State
	if tl.timeline.Limited || full {
		start, err := a.stateAtTimelineStart(ctx, roomID, tl.events, leave.StreamPos)
		if err != nil {
			return nil, err
		}
		state = start
		if !full {
			before, err := a.rooms.SnapshotAtStream(ctx, roomID, since.Events)
			if err != nil {
				return nil, err
			}
			state = stateDiff(before, start)
		}
	}
	evs, err := a.syncStateEvents(ctx, state, tl.events, rf.State, viewer, req.userID, false)
	lr.State = &stateList{Events: evs}
	return lr, err
}
