package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// client speaks the Matrix client-server API to one homeserver, and only
// that API, so the benchmark can drive any homeserver.
type client struct {
	base         string
	http         *http.Client
	sharedSecret string // Synapse-style admin registration when set
	// retry, when set, counts requests sent again after the server could
	// not be reached or the balancer in front of it answered 502, 503 or
	// 504 (a process of a group was killed): every request the benchmark
	// makes may be repeated (a send keeps its transaction ID).
	retry *atomic.Int64
	// backoff is the first wait before a retry (default 100 ms), growing
	// to ten times it.
	backoff time.Duration
}

// maxRetries bounds the attempts of a request through a balancer.
const maxRetries = 30

// transient reports whether err is one a request through a balancer may
// meet while a process behind it dies: the connection failed, or the
// balancer found no process to answer.
func transient(err error) bool {
	var he *httpError
	if errors.As(err, &he) {
		return he.Status == http.StatusBadGateway || he.Status == http.StatusServiceUnavailable || he.Status == http.StatusGatewayTimeout
	}
	return errors.Is(err, errUnreachable)
}

// errUnreachable marks a request that got no complete response.
var errUnreachable = errors.New("no response")

// session is one logged-in device.
type session struct {
	UserID   string `json:"user_id"`
	DeviceID string `json:"device_id"`
	Token    string `json:"access_token"`
}

// requestTimeout bounds every request, long polls included (they ask the
// server for at most maxLongPoll).
const requestTimeout = 60 * time.Second

// httpError is a response with an unexpected status.
type httpError struct {
	Method, Path string
	Status       int
	Body         string
}

func (e *httpError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.Path, e.Status, e.Body)
}

// do sends one request and decodes a 200 response into out (when not nil).
// Any other status is an *httpError; the caller counts it. With retry set,
// transient failures are retried.
func (c *client) do(ctx context.Context, method, path, token string, body, out any) error {
	err := c.do1(ctx, method, path, token, body, out)
	backoff := c.backoff
	if backoff == 0 {
		backoff = 100 * time.Millisecond
	}
	for attempt := 1; c.retry != nil && attempt < maxRetries && transient(err) && ctx.Err() == nil; attempt++ {
		c.retry.Add(1)
		select {
		case <-time.After(time.Duration(min(attempt, 10)) * backoff):
		case <-ctx.Done():
		}
		err = c.do1(ctx, method, path, token, body, out)
	}
	return err
}

func (c *client) do1(ctx context.Context, method, path, token string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encoding %s body: %w", path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("building %s %s: %w", method, path, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, shortPath(path), err)
		}
		return fmt.Errorf("%s %s: %w: %w", method, shortPath(path), errUnreachable, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: reading response: %w", method, shortPath(path), err)
		}
		return fmt.Errorf("%s %s: reading response: %w: %w", method, shortPath(path), errUnreachable, err)
	}
	if resp.StatusCode != http.StatusOK {
		if len(b) > 300 {
			b = b[:300]
		}
		return &httpError{Method: method, Path: shortPath(path), Status: resp.StatusCode, Body: string(b)}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decoding response: %w", method, shortPath(path), err)
		}
	}
	return nil
}

// shortPath drops the query string from error messages (it may hold tokens
// or long filters).
func shortPath(p string) string {
	if u, err := url.Parse(p); err == nil {
		return u.Path
	}
	return p
}

const v3 = "/_matrix/client/v3"

// register creates an account with a device. password may be empty (no
// password hashing, so setting up thousands of users stays cheap) unless the
// shared-secret admin API is used, which requires one.
func (c *client) register(ctx context.Context, localpart, password string) (session, error) {
	if c.sharedSecret != "" {
		return c.registerShared(ctx, localpart, password)
	}
	body := map[string]any{"username": localpart, "auth": map[string]any{"type": "m.login.dummy"}}
	if password != "" {
		body["password"] = password
	}
	var s session
	err := c.do(ctx, "POST", v3+"/register", "", body, &s)
	var he *httpError
	if errors.As(err, &he) && he.Status == http.StatusUnauthorized {
		// The server wants the UIA session first: take it and retry.
		var uia struct {
			Session string `json:"session"`
		}
		if json.Unmarshal([]byte(he.Body), &uia) != nil || uia.Session == "" {
			return s, err
		}
		body["auth"] = map[string]any{"type": "m.login.dummy", "session": uia.Session}
		err = c.do(ctx, "POST", v3+"/register", "", body, &s)
	}
	if err == nil && s.Token == "" {
		err = fmt.Errorf("register %s: no access_token in the response", localpart)
	}
	return s, err
}

// registerShared uses Synapse's shared-secret registration
// (/_synapse/admin/v1/register), which Hearth implements too.
func (c *client) registerShared(ctx context.Context, localpart, password string) (session, error) {
	if password == "" {
		password = "bench-" + localpart
	}
	var n struct {
		Nonce string `json:"nonce"`
	}
	if err := c.do(ctx, "GET", "/_synapse/admin/v1/register", "", nil, &n); err != nil {
		return session{}, err
	}
	mac := hmac.New(sha1.New, []byte(c.sharedSecret))
	mac.Write([]byte(n.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
	body := map[string]any{"nonce": n.Nonce, "username": localpart, "password": password, "admin": false,
		"mac": hex.EncodeToString(mac.Sum(nil))}
	var s session
	err := c.do(ctx, "POST", "/_synapse/admin/v1/register", "", body, &s)
	if err == nil && s.Token == "" {
		err = fmt.Errorf("admin register %s: no access_token in the response", localpart)
	}
	return s, err
}

// login opens a new device of an existing account.
func (c *client) login(ctx context.Context, localpart, password string) (session, error) {
	body := map[string]any{"type": "m.login.password", "password": password,
		"identifier": map[string]any{"type": "m.id.user", "user": localpart}}
	var s session
	err := c.do(ctx, "POST", v3+"/login", "", body, &s)
	if err == nil && s.Token == "" {
		err = fmt.Errorf("login %s: no access_token in the response", localpart)
	}
	return s, err
}

// createRoom creates a public room (anyone may join without an invite).
func (c *client) createRoom(ctx context.Context, s session, name string) (string, error) {
	var out struct {
		RoomID string `json:"room_id"`
	}
	err := c.do(ctx, "POST", v3+"/createRoom", s.Token, map[string]any{"preset": "public_chat", "name": name}, &out)
	if err == nil && out.RoomID == "" {
		err = errors.New("createRoom: no room_id in the response")
	}
	return out.RoomID, err
}

func (c *client) join(ctx context.Context, s session, roomID string) error {
	var out struct {
		RoomID string `json:"room_id"`
	}
	err := c.do(ctx, "POST", v3+"/join/"+url.PathEscape(roomID), s.Token, map[string]any{}, &out)
	if err == nil && out.RoomID != roomID {
		err = fmt.Errorf("join: room_id %q in the response, want %q", out.RoomID, roomID)
	}
	return err
}

// benchContent is the content of a benchmark message; Seq identifies it to
// the receivers that measure delivery.
type benchContent struct {
	MsgType string `json:"msgtype"`
	Body    string `json:"body"`
	Seq     *int   `json:"hearth_bench.seq,omitempty"`
}

// send sends one m.room.message and returns its event ID.
func (c *client) send(ctx context.Context, s session, roomID, txnID string, content benchContent) (string, error) {
	var out struct {
		EventID string `json:"event_id"`
	}
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/" + url.PathEscape(txnID)
	err := c.do(ctx, "PUT", path, s.Token, content, &out)
	if err == nil && out.EventID == "" {
		err = errors.New("send: no event_id in the response")
	}
	return out.EventID, err
}

// syncResponse holds the parts of a /sync response the benchmark checks.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			State struct {
				Events []json.RawMessage `json:"events"`
			} `json:"state"`
			Timeline struct {
				Events    []timelineEvent `json:"events"`
				Limited   bool            `json:"limited"`
				PrevBatch string          `json:"prev_batch"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

type timelineEvent struct {
	EventID string       `json:"event_id"`
	Type    string       `json:"type"`
	Content benchContent `json:"content"`
}

// messagesBack returns up to limit events before from, oldest first.
func (c *client) messagesBack(ctx context.Context, s session, roomID, from string, limit int) ([]timelineEvent, error) {
	q := url.Values{"dir": {"b"}, "limit": {strconv.Itoa(limit)}, "from": {from}}
	var page struct {
		Chunk []timelineEvent `json:"chunk"`
	}
	if err := c.do(ctx, "GET", v3+"/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), s.Token, nil, &page); err != nil {
		return nil, err
	}
	for i, j := 0, len(page.Chunk)-1; i < j; i, j = i+1, j-1 {
		page.Chunk[i], page.Chunk[j] = page.Chunk[j], page.Chunk[i]
	}
	return page.Chunk, nil
}

// Filters sent inline with /sync. quietFilter keeps long polls to room
// timelines (no presence), as a chat client's steady state would.
const (
	quietFilter = `{"presence":{"not_types":["*"]},"room":{"timeline":{"limit":50},"ephemeral":{"not_types":["*"]}}}`
	lazyFilter  = `{"room":{"state":{"lazy_load_members":true}}}`
)

// sync calls /sync; since "" is an initial sync. A long poll waits up to
// timeout on the server.
func (c *client) sync(ctx context.Context, s session, since string, timeout time.Duration, filter string) (*syncResponse, error) {
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	q.Set("timeout", strconv.FormatInt(timeout.Milliseconds(), 10))
	if filter != "" {
		q.Set("filter", filter)
	}
	var out syncResponse
	if err := c.do(ctx, "GET", v3+"/sync?"+q.Encode(), s.Token, nil, &out); err != nil {
		return nil, err
	}
	if out.NextBatch == "" {
		return nil, errors.New("sync: no next_batch in the response")
	}
	return &out, nil
}

// roomEventIDs lists the event IDs of a room's timeline, newest first,
// paging back through /messages to the start.
func (c *client) roomEventIDs(ctx context.Context, s session, roomID string) (map[string]bool, error) {
	out := map[string]bool{}
	from := ""
	for range 10000 {
		q := url.Values{"dir": {"b"}, "limit": {"1000"}}
		if from != "" {
			q.Set("from", from)
		}
		var page struct {
			Chunk []struct {
				EventID string `json:"event_id"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		if err := c.do(ctx, "GET", v3+"/rooms/"+url.PathEscape(roomID)+"/messages?"+q.Encode(), s.Token, nil, &page); err != nil {
			return nil, err
		}
		for _, ev := range page.Chunk {
			out[ev.EventID] = true
		}
		if page.End == "" || len(page.Chunk) == 0 {
			return out, nil
		}
		from = page.End
	}
	return nil, errors.New("messages: too many pages")
}

// joinVia joins a room through the server named (POST /join/{roomIdOrAlias}
// with server_name), as a client joins a room of another server.
func (c *client) joinVia(ctx context.Context, s session, roomID, server string) error {
	var out struct {
		RoomID string `json:"room_id"`
	}
	path := v3 + "/join/" + url.PathEscape(roomID) + "?" + url.Values{"server_name": {server}}.Encode()
	err := c.do(ctx, "POST", path, s.Token, map[string]any{}, &out)
	if err == nil && out.RoomID != roomID {
		err = fmt.Errorf("join: room_id %q in the response, want %q", out.RoomID, roomID)
	}
	return err
}

// putState sends a state event.
func (c *client) putState(ctx context.Context, s session, roomID, evType, stateKey string, content any) error {
	var out struct {
		EventID string `json:"event_id"`
	}
	path := v3 + "/rooms/" + url.PathEscape(roomID) + "/state/" + url.PathEscape(evType) + "/" + url.PathEscape(stateKey)
	err := c.do(ctx, "PUT", path, s.Token, content, &out)
	if err == nil && out.EventID == "" {
		err = errors.New("state: no event_id in the response")
	}
	return err
}

// stateCount is the number of events in a room's current state.
func (c *client) stateCount(ctx context.Context, s session, roomID string) (int, error) {
	var out []json.RawMessage
	err := c.do(ctx, "GET", v3+"/rooms/"+url.PathEscape(roomID)+"/state", s.Token, nil, &out)
	return len(out), err
}

// joinedMembers is the number of members GET /joined_members lists.
func (c *client) joinedMembers(ctx context.Context, s session, roomID string) (int, error) {
	var out struct {
		Joined map[string]json.RawMessage `json:"joined"`
	}
	err := c.do(ctx, "GET", v3+"/rooms/"+url.PathEscape(roomID)+"/joined_members", s.Token, nil, &out)
	return len(out.Joined), err
}
