package clientapi

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Thread subscriptions (MSC4306, under its unstable prefix) and the
// companion endpoint of their sliding sync extension (MSC4308). The server
// makes no subscription by itself: the MSC has clients subscribe when they
// send in a thread (manual) or when a thread event mentions the user
// (automatic, with the cause event), since only clients can see mentions in
// encrypted rooms. The server orders automatic subscriptions against
// unsubscriptions by the events stream.

const (
	msc4306 = "/_matrix/client/unstable/io.element.msc4306"
	msc4308 = "/_matrix/client/unstable/io.element.msc4308"
	// threadSubsExt is the sliding sync extension's name (MSC4308 unstable
	// prefix).
	threadSubsExt          = "io.element.msc4308.thread_subscriptions"
	defaultThreadSubsLimit = 100
	maxThreadSubsLimit     = 1000
)

// threadRoot loads the thread root the path names, visible to the caller,
// or 404 (MSC4306: a thread that does not exist or is inaccessible).
func (a *API) threadRoot(r *http.Request, c accounts.Caller) (roomID, threadID string, err error) {
	roomID, threadID = chi.URLParam(r, "roomId"), chi.URLParam(r, "eventId")
	if _, err := a.visibleEvent(r, roomID, threadID, c.UserID); err != nil {
		return "", "", err
	}
	return roomID, threadID, nil
}

// PUT .../rooms/{roomId}/thread/{eventId}/subscription
func (a *API) putThreadSubscription(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		Automatic *string `json:"automatic"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	roomID, threadID, err := a.threadRoot(r, c)
	if err != nil {
		return nil, err
	}
	var causePos int64
	if req.Automatic != nil {
		cause, err := a.visibleEvent(r, roomID, *req.Automatic, c.UserID)
		if err != nil {
			return nil, err
		}
		if cause.RelType == nil || *cause.RelType != "m.thread" || cause.RelatesTo == nil || *cause.RelatesTo != threadID {
			return nil, mxhttp.NotInThread("%s is not in the thread %s", cause.EventID, threadID)
		}
		causePos = cause.StreamPos
	}
	pos, err := a.db.SubscribeThread(r.Context(), c.UserID, roomID, threadID, req.Automatic != nil, causePos)
	if errors.Is(err, storage.ErrConflictingUnsubscription) {
		return nil, mxhttp.ConflictingUnsubscription("The thread was unsubscribed after that event")
	}
	if err != nil {
		return nil, err
	}
	a.threadSubsChanged(c.UserID, pos)
	return struct{}{}, nil
}

// GET .../rooms/{roomId}/thread/{eventId}/subscription
func (a *API) getThreadSubscription(r *http.Request, c accounts.Caller) (any, error) {
	roomID, threadID, err := a.threadRoot(r, c)
	if err != nil {
		return nil, err
	}
	s, err := a.db.GetThreadSubscription(r.Context(), c.UserID, roomID, threadID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Not subscribed to this thread")
	}
	if err != nil {
		return nil, err
	}
	return map[string]bool{"automatic": s.Automatic}, nil
}

// DELETE .../rooms/{roomId}/thread/{eventId}/subscription: idempotent.
func (a *API) deleteThreadSubscription(r *http.Request, c accounts.Caller) (any, error) {
	roomID, threadID, err := a.threadRoot(r, c)
	if err != nil {
		return nil, err
	}
	// Every event already in the stream counts as seen by the user when
	// they unsubscribe.
	eventsPos, err := storage.MaxStreamPos(r.Context(), a.db.Read())
	if err != nil {
		return nil, err
	}
	pos, err := a.db.UnsubscribeThread(r.Context(), c.UserID, roomID, threadID, max(eventsPos, a.notifier.Current().Events))
	if err != nil {
		return nil, err
	}
	a.threadSubsChanged(c.UserID, pos)
	return struct{}{}, nil
}

func (a *API) threadSubsChanged(userID string, pos int64) {
	if pos > 0 {
		a.notifier.Users([]string{userID}, syncstream.Position{ThreadSubs: pos})
	}
}

// threadSubsResult is the extension's response, and the companion
// endpoint's.
type threadSubsResult struct {
	Subscribed   map[string]map[string]any `json:"subscribed,omitempty"`
	Unsubscribed map[string]map[string]any `json:"unsubscribed,omitempty"`
	PrevBatch    string                    `json:"prev_batch,omitempty"`
	End          string                    `json:"end,omitempty"`
}

func (res *threadSubsResult) add(s storage.ThreadSubscription) {
	m := &res.Subscribed
	entry := map[string]any{"bump_stamp": s.StreamPos}
	if s.Subscribed {
		entry["automatic"] = s.Automatic
	} else {
		m = &res.Unsubscribed
	}
	if *m == nil {
		*m = map[string]map[string]any{}
	}
	if (*m)[s.RoomID] == nil {
		(*m)[s.RoomID] = map[string]any{}
	}
	(*m)[s.RoomID][s.ThreadID] = entry
}

// threadSubsPage reads the latest changes in (after, before), at most
// limit; more reports that older ones were left out, and the token to
// continue backwards from.
func (a *API) threadSubsPage(ctx context.Context, userID string, after, before int64, limit int, initial bool) (*threadSubsResult, string, error) {
	subs, err := a.db.ThreadSubscriptionChanges(ctx, userID, after, before, limit+1, initial)
	if err != nil {
		return nil, "", err
	}
	res := &threadSubsResult{}
	more := ""
	if len(subs) > limit {
		subs = subs[:limit]
		more = threadSubsToken(subs[len(subs)-1].StreamPos)
	}
	for _, s := range subs {
		res.add(s)
	}
	return res, more, nil
}

// A companion endpoint token is "ts<position>": changes strictly before
// it are still to be fetched.
func threadSubsToken(pos int64) string { return "ts" + strconv.FormatInt(pos, 10) }

// GET /_matrix/client/unstable/io.element.msc4308/thread_subscriptions
// (MSC4308): backwards pagination of thread subscription changes, from a
// prev_batch (or the end) down to a sliding sync pos.
func (a *API) threadSubscriptions(r *http.Request, c accounts.Caller) (any, error) {
	q := r.URL.Query()
	if q.Get("dir") != "b" {
		return nil, mxhttp.InvalidParam("dir must be b")
	}
	limit := defaultThreadSubsLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return nil, mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxThreadSubsLimit)
	}
	before, after := int64(math.MaxInt64), int64(0)
	if f := q.Get("from"); f != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(f, "ts"), 10, 64)
		if err != nil || !strings.HasPrefix(f, "ts") || n <= 0 {
			return nil, mxhttp.InvalidParam("from is not a thread subscriptions token")
		}
		before = n
	}
	if t := q.Get("to"); t != "" {
		// A sliding sync pos: its sync token part says how far the
		// connection's thread subscriptions went.
		tok, ok := slidingPosStreams(t)
		pos, err := syncstream.ParseToken(tok)
		if !ok || err != nil {
			return nil, mxhttp.InvalidParam("to is not a sliding sync pos")
		}
		after = pos.ThreadSubs
	}
	res, more, err := a.threadSubsPage(r.Context(), c.UserID, after, before, limit, after == 0)
	if err != nil {
		return nil, err
	}
	res.End = more
	if res.Subscribed == nil {
		res.Subscribed = map[string]map[string]any{}
	}
	if res.Unsubscribed == nil {
		res.Unsubscribed = map[string]map[string]any{}
	}
	return res, nil
}
