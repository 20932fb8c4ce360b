package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// limitTarget labels the ceiling's column in the report.
const limitTarget = "limit"

// ceiling is the "limit" server: the least a homeserver must do to accept a
// message, and nothing more. It answers just the endpoints the send
// workload uses and, for each send, writes the rows Hearth writes for a
// message (the event, its transaction ID, the room's new head) into
// Hearth's own schema, on the same engine (SQLite, WAL,
// synchronous=NORMAL), one transaction per request. No auth rules, no
// signing, no state, no sync: Hearth's send throughput divided by this one
// is how close Hearth gets to what the machine and the database allow.
type ceiling struct {
	db     *storage.DB
	mu     sync.Mutex
	tokens map[string]string // access token -> user ID
}

// startCeiling opens a fresh database in dir and serves the ceiling on a
// loopback port; stop closes both.
func startCeiling(ctx context.Context, dir string) (url string, stop func(), err error) {
	db, err := storage.Open(ctx, filepath.Join(dir, "limit.db"), storage.Options{Synchronous: "normal"})
	if err != nil {
		return "", nil, fmt.Errorf("limit: opening its database: %w", err)
	}
	c := &ceiling{db: db, tokens: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+v3+"/register", c.register)
	mux.HandleFunc("POST "+v3+"/createRoom", c.authed(c.createRoom))
	mux.HandleFunc("POST "+v3+"/join/{room}", c.authed(c.join))
	mux.HandleFunc("PUT "+v3+"/rooms/{room}/send/{type}/{txn}", c.authed(c.send))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		db.Close()
		return "", nil, fmt.Errorf("limit: listening: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		db.Close()
		os.RemoveAll(dir)
	}, nil
}

func (c *ceiling) authed(h func(w http.ResponseWriter, r *http.Request, userID string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok := r.Header.Get("Authorization")
		c.mu.Lock()
		user, ok := c.tokens[tok]
		c.mu.Unlock()
		if !ok {
			mxhttp.WriteError(w, r, mxhttp.UnknownToken("Unknown access token"))
			return
		}
		h(w, r, user)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *ceiling) register(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	user, tok := "@"+req.Username+":limit", randomHex(16)
	c.mu.Lock()
	c.tokens["Bearer "+tok] = user
	c.mu.Unlock()
	mxhttp.WriteJSON(w, http.StatusOK, session{UserID: user, DeviceID: "LIMIT", Token: tok})
}

func (c *ceiling) createRoom(w http.ResponseWriter, r *http.Request, _ string) {
	roomID := "!" + randomHex(9) + ":limit"
	err := c.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertRoom(r.Context(), tx, storage.Room{RoomID: roomID, Version: "10", Extremities: []string{}, CreatedTS: time.Now().UnixMilli()})
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
}

func (c *ceiling) join(w http.ResponseWriter, r *http.Request, _ string) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"room_id": r.PathValue("room")})
}

// fakePDU has the fields and sizes of a signed room-version-10 PDU, so the
// rows written weigh what Hearth's do.
type fakePDU struct {
	AuthEvents []string          `json:"auth_events"`
	Content    json.RawMessage   `json:"content"`
	Depth      int64             `json:"depth"`
	Hashes     map[string]string `json:"hashes"`
	OriginTS   int64             `json:"origin_server_ts"`
	PrevEvents []string          `json:"prev_events"`
	RoomID     string            `json:"room_id"`
	Sender     string            `json:"sender"`
	Signatures map[string]any    `json:"signatures"`
	Type       string            `json:"type"`
}

func fakeEventID(seed []byte) string {
	h := sha256.Sum256(seed)
	return "$" + base64.RawURLEncoding.EncodeToString(h[:])
}

func (c *ceiling) send(w http.ResponseWriter, r *http.Request, userID string) {
	var content json.RawMessage
	if err := mxhttp.ReadJSON(r, &content); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	roomID, evType, txnID := r.PathValue("room"), r.PathValue("type"), r.PathValue("txn")
	ctx := r.Context()
	var eventID string
	err := c.db.WriteTx(ctx, func(tx *sql.Tx) error {
		room, err := c.db.LockRoom(ctx, tx, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("Unknown room")
		}
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		seed := []byte(fmt.Sprintf("%s|%s|%d|%s", roomID, userID, room.MaxDepth, txnID))
		pdu := fakePDU{
			AuthEvents: []string{fakeEventID([]byte("create" + roomID)), fakeEventID([]byte("power" + roomID)), fakeEventID([]byte(userID))},
			Content:    content, Depth: room.MaxDepth + 1, OriginTS: now, PrevEvents: room.Extremities,
			Hashes: map[string]string{"sha256": base64.RawStdEncoding.EncodeToString(seed[:min(32, len(seed))])},
			RoomID: roomID, Sender: userID, Type: evType,
			Signatures: map[string]any{"limit": map[string]string{"ed25519:a": base64.RawStdEncoding.EncodeToString(make([]byte, 64))}},
		}
		if pdu.PrevEvents == nil {
			pdu.PrevEvents = []string{}
		}
		js, err := json.Marshal(pdu)
		if err != nil {
			return err
		}
		eventID = fakeEventID(js)
		device := "LIMIT"
		if _, err := storage.InsertEvent(ctx, tx, storage.Event{EventID: eventID, RoomID: roomID, Type: evType, Sender: userID,
			Depth: pdu.Depth, OriginTS: now, SnapshotBefore: room.CurrentSnapshot, SnapshotAfter: room.CurrentSnapshot,
			SenderDevice: &device, TxnID: &txnID, JSON: js}); err != nil {
			return err
		}
		if err := storage.InsertTxn(ctx, tx, userID, device, "send:"+roomID+":"+evType, txnID, eventID, now); err != nil {
			return err
		}
		return storage.UpdateRoomHead(ctx, tx, roomID, []string{eventID}, pdu.Depth, room.CurrentSnapshot)
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"event_id": eventID})
}
