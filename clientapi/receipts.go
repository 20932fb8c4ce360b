package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Receipts and read markers (client-server API, Receipts; Fully read markers).

const fullyReadType = "m.fully_read"

// POST /rooms/{roomId}/receipt/{receiptType}/{eventId}
func (a *API) postReceipt(r *http.Request, c accounts.Caller) (any, error) {
	roomID, typ, eventID := pathParam(r, "roomId"), pathParam(r, "receiptType"), pathParam(r, "eventId")
	var body struct {
		ThreadID string `json:"thread_id"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	switch typ {
	case "m.read", "m.read.private", fullyReadType:
	default:
		return nil, mxhttp.InvalidParam("Unknown receipt type %q", typ)
	}
	if typ == fullyReadType && body.ThreadID != "" {
		return nil, mxhttp.InvalidParam("m.fully_read cannot be threaded")
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	if err := a.setReadMarker(r.Context(), c.UserID, roomID, typ, eventID, body.ThreadID); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /rooms/{roomId}/read_markers
func (a *API) postReadMarkers(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	var body map[string]*string
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	for _, typ := range []string{fullyReadType, "m.read", "m.read.private"} {
		if id := body[typ]; id != nil && *id != "" {
			if err := a.setReadMarker(r.Context(), c.UserID, roomID, typ, *id, ""); err != nil {
				return nil, err
			}
		}
	}
	return struct{}{}, nil
}

// setReadMarker stores a receipt, or for m.fully_read the room account data,
// after checking the event is in the room.
func (a *API) setReadMarker(ctx context.Context, userID, roomID, typ, eventID, threadID string) error {
	ev, err := a.rooms.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.RoomID != roomID) {
		return mxhttp.NotFound("Event %s not found in %s", eventID, roomID)
	}
	if err != nil {
		return err
	}
	if typ == fullyReadType {
		content, _ := json.Marshal(map[string]string{"event_id": eventID})
		pos, err := a.db.PutAccountData(ctx, userID, roomID, fullyReadType, content)
		if err != nil {
			return err
		}
		a.accountDataChanged(userID, pos)
		return nil
	}
	if threadID != "" && threadID != "main" && !strings.HasPrefix(threadID, "$") {
		return mxhttp.InvalidParam("thread_id must be main or an event ID")
	}
	ts := time.Now().UnixMilli()
	pos, err := a.db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: typ, ThreadID: threadID, EventID: eventID, TS: ts})
	if err != nil {
		return err
	}
	if a.fed != nil {
		a.fed.SendReceipt(ctx, roomID, userID, typ, eventID, threadID, ts)
	}
	a.push.ReadReceipt(userID)
	users := []string{userID}
	if typ != "m.read.private" {
		users = a.notifier.RoomUsers(ctx, roomID)
	}
	a.notifier.Users(users, syncstream.Position{Receipts: pos})
	return nil
}

// receiptEvent builds a room's m.receipt EDU for the viewer from receipts;
// private receipts are only the viewer's own. nil when there is none.
func receiptEvent(receipts []storage.Receipt, viewer string) map[string]any {
	content := map[string]map[string]map[string]any{}
	for _, rc := range receipts {
		if rc.Type == "m.read.private" && rc.UserID != viewer {
			continue
		}
		byType := content[rc.EventID]
		if byType == nil {
			byType = map[string]map[string]any{}
			content[rc.EventID] = byType
		}
		users := byType[rc.Type]
		if users == nil {
			users = map[string]any{}
			byType[rc.Type] = users
		}
		entry := map[string]any{"ts": rc.TS}
		if rc.ThreadID != "" {
			entry["thread_id"] = rc.ThreadID
			// The format holds one receipt per user, event and type: an
			// unthreaded receipt for the same event wins over a threaded one.
			if old, ok := users[rc.UserID].(map[string]any); ok && old["thread_id"] == nil {
				continue
			}
		}
		users[rc.UserID] = entry
	}
	if len(content) == 0 {
		return nil
	}
	return map[string]any{"type": "m.receipt", "content": content}
}
