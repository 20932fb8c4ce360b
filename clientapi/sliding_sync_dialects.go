package clientapi

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// The two dialects of simplified sliding sync: request and response
// translation only; slidingSync does the work.

// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync
// (what Element X and matrix-rust-sdk speak, as Synapse serves it).
func (a *API) slidingSyncUnstable(r *http.Request, c accounts.Caller) (any, error) {
	var body struct {
		ConnID            string                          `json:"conn_id"`
		Lists             map[string]ssUnstableList       `json:"lists"`
		RoomSubscriptions map[string]ssUnstableRoomConfig `json:"room_subscriptions"`
		Extensions        map[string]json.RawMessage      `json:"extensions"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	req := ssRequest{ConnID: body.ConnID, Pos: q.Get("pos"), SetPresence: q.Get("set_presence"),
		Lists: map[string]ssList{}, Subs: map[string]ssRoomConfig{}}
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return nil, mxhttp.InvalidParam("timeout must be a non-negative integer")
		}
		req.Timeout = min(time.Duration(ms)*time.Millisecond, maxSyncTimeout)
	}
	if len(body.Lists) > maxSlidingLists || len(body.RoomSubscriptions) > maxSlidingSubscriptions {
		return nil, mxhttp.InvalidParam("At most %d lists and %d room subscriptions", maxSlidingLists, maxSlidingSubscriptions)
	}
	for name, l := range body.Lists {
		cfg, err := l.ssUnstableRoomConfig.convert(c.UserID)
		if err != nil {
			return nil, err
		}
		list := ssList{Config: cfg}
		if l.Ranges != nil {
			if len(l.Ranges) > maxSlidingRanges {
				return nil, mxhttp.InvalidParam("At most %d ranges per list", maxSlidingRanges)
			}
			list.Ranges = [][2]int{}
			for _, rg := range l.Ranges {
				conv, err := ssRange(rg)
				if err != nil {
					return nil, err
				}
				list.Ranges = append(list.Ranges, conv)
			}
		}
		if f := l.Filters; f != nil {
			list.Filters = ssFilters{IsDM: f.IsDM, IsEncrypted: f.IsEncrypted, IsInvite: f.IsInvite,
				RoomTypes: f.RoomTypes, NotRoomTypes: f.NotRoomTypes, HasRoomTypes: f.RoomTypes != nil,
				Spaces: f.Spaces, Tags: f.Tags, NotTags: f.NotTags}
		}
		req.Lists[name] = list
	}
	resp, err := runSlidingSync(a, r, c, req, body.RoomSubscriptions, body.Extensions)
	if err != nil {
		return nil, err
	}
	for _, room := range resp.Rooms {
		room.InviteState, room.StrippedState = room.StrippedState, nil
	}
	return resp, nil
}

type ssUnstableRoomConfig struct {
	TimelineLimit *int       `json:"timeline_limit"`
	RequiredState [][]string `json:"required_state"`
}

type ssUnstableList struct {
	ssUnstableRoomConfig
	Ranges  [][]int64 `json:"ranges"`
	Filters *struct {
		IsDM         *bool     `json:"is_dm"`
		IsEncrypted  *bool     `json:"is_encrypted"`
		IsInvite     *bool     `json:"is_invite"`
		RoomTypes    []*string `json:"room_types"`
		NotRoomTypes []*string `json:"not_room_types"`
		Spaces       []string  `json:"spaces"`
		Tags         []string  `json:"tags"`
		NotTags      []string  `json:"not_tags"`
	} `json:"filters"`
}

// convert reads [[type, state_key], ...] with "*" (any), "$ME" (the user)
// and ["m.room.member", "$LAZY"] (lazy-loaded members).
func (rc ssUnstableRoomConfig) convert(userID string) (ssRoomConfig, error) {
	var out ssRoomConfig
	var err error
	if out.TimelineLimit, err = ssTimelineLimit(rc.TimelineLimit); err != nil {
		return out, err
	}
	if len(rc.RequiredState) > maxSlidingStateElems {
		return out, mxhttp.InvalidParam("At most %d required_state entries", maxSlidingStateElems)
	}
	for _, pair := range rc.RequiredState {
		if len(pair) != 2 {
			return out, mxhttp.InvalidParam("required_state entries are [type, state_key]")
		}
		typ, key := pair[0], pair[1]
		if typ == "m.room.member" && key == "$LAZY" {
			out.RequiredState.Lazy = true
			continue
		}
		el := ssStateElem{}
		if typ != "*" {
			el.Type = &typ
		}
		switch key {
		case "*":
		case "$ME":
			el.StateKey = &userID
		default:
			el.StateKey = &key
		}
		out.RequiredState.Include = append(out.RequiredState.Include, el)
	}
	return out, nil
}

// POST /_matrix/client/v4/sync (MSC4186 as merged).
func (a *API) slidingSyncV4(r *http.Request, c accounts.Caller) (any, error) {
	var body struct {
		ConnID            string                     `json:"conn_id"`
		Pos               string                     `json:"pos"`
		Timeout           *int64                     `json:"timeout"`
		SetPresence       string                     `json:"set_presence"`
		Lists             map[string]ssV4List        `json:"lists"`
		RoomSubscriptions map[string]ssV4RoomConfig  `json:"room_subscriptions"`
		Extensions        map[string]json.RawMessage `json:"extensions"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	req := ssRequest{ConnID: body.ConnID, Pos: body.Pos, SetPresence: body.SetPresence,
		Lists: map[string]ssList{}, Subs: map[string]ssRoomConfig{}}
	if body.Timeout != nil {
		if *body.Timeout < 0 {
			return nil, mxhttp.InvalidParam("timeout must be a non-negative integer")
		}
		req.Timeout = min(time.Duration(*body.Timeout)*time.Millisecond, maxSyncTimeout)
	}
	if len(body.Lists) > maxSlidingLists || len(body.RoomSubscriptions) > maxSlidingSubscriptions {
		return nil, mxhttp.InvalidParam("At most %d lists and %d room subscriptions", maxSlidingLists, maxSlidingSubscriptions)
	}
	for name, l := range body.Lists {
		cfg, err := l.ssV4RoomConfig.convert(c.UserID)
		if err != nil {
			return nil, err
		}
		list := ssList{Config: cfg}
		if l.Range != nil {
			rg, err := ssRange(l.Range)
			if err != nil {
				return nil, err
			}
			list.Ranges = [][2]int{rg}
		}
		if f := l.Filters; f != nil {
			list.Filters = ssFilters{IsDM: f.IsDM, IsEncrypted: f.IsEncrypted, IsInvite: f.IsInvited,
				RoomTypes: f.RoomTypes, NotRoomTypes: f.NotRoomTypes, HasRoomTypes: f.RoomTypes != nil,
				Spaces: f.Spaces, Tags: f.Tags, NotTags: f.NotTags}
		}
		req.Lists[name] = list
	}
	resp, err := runSlidingSync(a, r, c, req, body.RoomSubscriptions, body.Extensions)
	if err != nil {
		return nil, err
	}
	for _, room := range resp.Rooms {
		// v4 dropped the counts (MSC4186 changelog) and says null for a
		// name or avatar removed.
		room.NotificationCount, room.HighlightCount = nil, nil
		if room.nameRemoved {
			room.Name = json.RawMessage("null")
		}
		if room.avatarRemoved {
			room.Avatar = json.RawMessage("null")
		}
	}
	return resp, nil
}

type ssV4StateElem struct {
	Type     *string `json:"type"`
	StateKey *string `json:"state_key"`
}

type ssV4RoomConfig struct {
	TimelineLimit *int `json:"timeline_limit"`
	RequiredState *struct {
		Include     []ssV4StateElem `json:"include"`
		Exclude     []ssV4StateElem `json:"exclude"`
		LazyMembers bool            `json:"lazy_members"`
	} `json:"required_state"`
}

type ssV4List struct {
	ssV4RoomConfig
	Range   []int64 `json:"range"`
	Filters *struct {
		IsDM         *bool     `json:"is_dm"`
		IsEncrypted  *bool     `json:"is_encrypted"`
		IsInvited    *bool     `json:"is_invited"`
		RoomTypes    []*string `json:"room_types"`
		NotRoomTypes []*string `json:"not_room_types"`
		Spaces       []string  `json:"spaces"`
		Tags         []string  `json:"tags"`
		NotTags      []string  `json:"not_tags"`
	} `json:"filters"`
}

func (rc ssV4RoomConfig) convert(userID string) (ssRoomConfig, error) {
	var out ssRoomConfig
	var err error
	if out.TimelineLimit, err = ssTimelineLimit(rc.TimelineLimit); err != nil {
		return out, err
	}
	if rc.RequiredState == nil {
		return out, nil
	}
	rs := rc.RequiredState
	if len(rs.Include)+len(rs.Exclude) > maxSlidingStateElems {
		return out, mxhttp.InvalidParam("At most %d required_state entries", maxSlidingStateElems)
	}
	conv := func(els []ssV4StateElem) []ssStateElem {
		out := make([]ssStateElem, 0, len(els))
		for _, e := range els {
			el := ssStateElem{Type: e.Type, StateKey: e.StateKey}
			if el.StateKey != nil && *el.StateKey == "$ME" {
				el.StateKey = &userID
			}
			out = append(out, el)
		}
		return out
	}
	out.RequiredState = ssRequiredState{Include: conv(rs.Include), Exclude: conv(rs.Exclude), Lazy: rs.LazyMembers}
	return out, nil
}

// ssRange checks one inclusive [start, end] range.
// ssRoomConfigOf is a dialect's room config (lists and subscriptions).
type ssRoomConfigOf interface {
	convert(userID string) (ssRoomConfig, error)
}

// runSlidingSync is what both dialects do once their lists are read: the
// room subscriptions, the extensions, the checks every request gets, and
// the request itself.
func runSlidingSync[C ssRoomConfigOf](a *API, r *http.Request, c accounts.Caller, req ssRequest, subs map[string]C, ext map[string]json.RawMessage) (*ssResponse, error) {
	for roomID, sub := range subs {
		cfg, err := sub.convert(c.UserID)
		if err != nil {
			return nil, err
		}
		req.Subs[roomID] = cfg
	}
	var err error
	if req.Ext, err = ssParseExtensions(ext); err != nil {
		return nil, err
	}
	if err := ssCheckCommon(&req); err != nil {
		return nil, err
	}
	return a.slidingSync(r.Context(), c, req)
}

func ssRange(rg []int64) ([2]int, error) {
	if len(rg) != 2 || rg[0] < 0 || rg[1] < rg[0] {
		return [2]int{}, mxhttp.InvalidParam("A range is [start, end] with 0 <= start <= end")
	}
	return [2]int{int(min(rg[0], math.MaxInt32)), int(min(rg[1], math.MaxInt32))}, nil
}

func ssTimelineLimit(n *int) (int, error) {
	if n == nil {
		return 0, nil
	}
	if *n < 0 {
		return 0, mxhttp.InvalidParam("timeline_limit must not be negative")
	}
	return min(*n, maxSlidingTimelineLimit), nil
}

// ssParseExtensions reads the extensions Hearth knows; others are ignored.
func ssParseExtensions(raw map[string]json.RawMessage) (ssExtensions, error) {
	var out ssExtensions
	enabled := func(name string) (bool, json.RawMessage, error) {
		r, ok := raw[name]
		if !ok {
			return false, nil, nil
		}
		var e struct {
			Enabled *bool `json:"enabled"`
		}
		if err := json.Unmarshal(r, &e); err != nil {
			return false, nil, mxhttp.BadJSON("extensions.%s: %v", name, err)
		}
		return e.Enabled != nil && *e.Enabled, r, nil
	}
	on, r, err := enabled("to_device")
	if err != nil {
		return out, err
	}
	if on {
		var td struct {
			Since string `json:"since"`
			Limit *int   `json:"limit"`
		}
		if err := json.Unmarshal(r, &td); err != nil {
			return out, mxhttp.BadJSON("extensions.to_device: %v", err)
		}
		out.ToDevice = &ssToDeviceExt{Limit: maxToDevicePerSync}
		if td.Limit != nil {
			if *td.Limit <= 0 {
				return out, mxhttp.InvalidParam("extensions.to_device.limit must be positive")
			}
			out.ToDevice.Limit = min(*td.Limit, maxSlidingToDevice)
		}
		if td.Since != "" {
			n, err := strconv.ParseInt(td.Since, 10, 64)
			if err != nil || n < 0 {
				return out, mxhttp.InvalidParam("extensions.to_device.since is not a to-device token")
			}
			out.ToDevice.Since = n
		}
	}
	on, r, err = enabled(threadSubsExt)
	if err != nil {
		return out, err
	}
	if on {
		var ts struct {
			Limit *int `json:"limit"`
		}
		if err := json.Unmarshal(r, &ts); err != nil {
			return out, mxhttp.BadJSON("extensions.%s: %v", threadSubsExt, err)
		}
		out.ThreadSubs = defaultThreadSubsLimit
		if ts.Limit != nil {
			if *ts.Limit <= 0 {
				return out, mxhttp.InvalidParam("extensions.%s.limit must be positive", threadSubsExt)
			}
			out.ThreadSubs = min(*ts.Limit, maxThreadSubsLimit)
		}
	}
	for _, ext := range []struct {
		name string
		flag *bool
	}{{"e2ee", &out.E2EE}, {"account_data", &out.AccountData}, {"receipts", &out.Receipts}, {"typing", &out.Typing}} {
		if *ext.flag, _, err = enabled(ext.name); err != nil {
			return out, err
		}
	}
	return out, nil
}

// ssCheckCommon validates what both dialects share.
func ssCheckCommon(req *ssRequest) error {
	if len(req.ConnID) > maxSlidingConnIDLen {
		return mxhttp.InvalidParam("conn_id is too long")
	}
	switch req.SetPresence {
	case "":
		req.SetPresence = "online"
	case "online", "offline", "unavailable":
	default:
		return mxhttp.InvalidParam("set_presence must be online, offline or unavailable")
	}
	for _, l := range req.Lists {
		if len(l.Filters.Spaces) > maxSlidingLists || len(l.Filters.Tags) > maxSlidingLists || len(l.Filters.NotTags) > maxSlidingLists {
			return mxhttp.InvalidParam("At most %d spaces, tags or not_tags in a filter", maxSlidingLists)
		}
	}
	for roomID := range req.Subs {
		if !strings.HasPrefix(roomID, "!") {
			return mxhttp.InvalidParam("room_subscriptions keys are room IDs")
		}
	}
	return nil
}
