package federation_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// fedUser is a user on one of several in-process servers.
type fedUser struct {
	hs    *hearthtest.Server
	id    string
	token string
}

func newFedUser(t testing.TB, hs *hearthtest.Server, name string) fedUser {
	id, tok := hs.RegisterUser(t, name)
	return fedUser{hs, id, tok}
}

func (u fedUser) do(t *testing.T, method, path string, body any) hearthtest.Response {
	t.Helper()
	return u.hs.Do(t, method, path, u.token, body)
}

// waitForMessage syncs until the room's timeline has a message with body.
func (u fedUser) waitForMessage(t *testing.T, roomID, body string) {
	t.Helper()
	since := ""
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		path := "/_matrix/client/v3/sync?timeout=2000"
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		r := u.do(t, "GET", path, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since, _ = r.JSON["next_batch"].(string)
		if strings.Contains(string(r.Body), `"body":"`+body+`"`) && strings.Contains(string(r.Body), roomID) {
			return
		}
	}
	t.Fatalf("%s never saw %q in %s", u.id, body, roomID)
}

func (u fedUser) send(t *testing.T, roomID, body string) {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+fmt.Sprint(time.Now().UnixNano()),
		map[string]any{"msgtype": "m.text", "body": body})
	hearthtest.Expect(t, r, http.StatusOK, "")
}

// A user on A joins a room on B; messages flow both ways.
func TestJoinRemoteRoomAndTalk(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		r := bob.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat", "name": "over there"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		bob.send(t, roomID, "before alice")

		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		// Alice's server now has the room's state.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["name"] != "over there" {
			t.Fatalf("room name on A: %s", r.Body)
		}
		// B sees alice's join.
		r = bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(string(r.Body), alice.id) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			r = bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		}
		if !strings.Contains(string(r.Body), alice.id) {
			t.Fatalf("B does not list alice as joined: %s", r.Body)
		}
		bob.send(t, roomID, "hello from B")
		alice.waitForMessage(t, roomID, "hello from B")
		alice.send(t, roomID, "hello from A")
		bob.waitForMessage(t, roomID, "hello from A")
	})
}

// A user on A invites a user on B (at creation and later); B's user sees
// the invite in sync, joins through A, and they talk.
func TestInviteAcrossServers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{bob.id}, "is_direct": true})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		// bob's sync shows the invite with stripped state.
		deadline := time.Now().Add(10 * time.Second)
		var sr hearthtest.Response
		for time.Now().Before(deadline) {
			sr = bob.do(t, "GET", "/_matrix/client/v3/sync", nil)
			if strings.Contains(string(sr.Body), `"invite":{"`+roomID) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(string(sr.Body), `"invite":{"`+roomID) {
			t.Fatalf("bob's sync lacks the invite: %s", sr.Body)
		}
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		alice.send(t, roomID, "welcome bob")
		bob.waitForMessage(t, roomID, "welcome bob")
	})
}

// createRoom's invite list reaches a user of another server through their
// server, who can then join.
func TestCreateRoomInvitesRemoteUser(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		bobSync := newSyncer(t, bob)
		r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{bob.id}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		bobSync.until(t, "the invite", func(resp map[string]any) bool { return get(resp, "rooms", "invite", roomID) != nil })
		r = bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(alice.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
	})
}

// While our send_join is in flight the room goes on: the resident server
// sends us (in the room from our join on) a new event, and our server takes
// it in (fetching its auth chain and the join before it) while it stores
// the send_join answer, the same events from two sides at once. The join
// must succeed and the room work afterwards.
func TestJoinWhileTheRoomArrivesByTransaction(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		bobSync := newSyncer(t, bob)
		r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{bob.id}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		bobSync.until(t, "the invite", func(resp map[string]any) bool { return get(resp, "rooms", "invite", roomID) != nil })

		// PDUs carry no event_id (room versions 3 and up): the transaction
		// is recognised by the message's text.
		const text = "while you were joining"
		arrived := make(chan struct{})
		var once sync.Once
		fed[1].WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(bytes.NewReader(body))
					if strings.Contains(string(body), text) {
						once.Do(func() { close(arrived) })
					}
				}
				fedH.ServeHTTP(w, r)
			})
		})
		// A answers send_join once alice has spoken and her message has
		// reached B, so that B handles both at the same time.
		fed[0].WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v2/send_join/") {
					fedH.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				fedH.ServeHTTP(rec, r)
				if alice.sendRaw(t, roomID, text) {
					select {
					case <-arrived:
					case <-time.After(10 * time.Second):
						t.Errorf("alice's message never reached B")
					}
				}
				for k, v := range rec.Header() {
					w.Header()[k] = v
				}
				w.WriteHeader(rec.Code)
				_, _ = w.Write(rec.Body.Bytes())
			})
		})
		r = bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(alice.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitForMessage(t, roomID, text)
		alice.send(t, roomID, "you made it")
		bob.waitForMessage(t, roomID, "you made it")
	})
}

// sendRaw sends a message from a goroutine other than the test's (inside a
// handler): it reports failure with t.Errorf and returns false.
func (u fedUser) sendRaw(t *testing.T, roomID, body string) bool {
	req, _ := http.NewRequest("PUT", u.hs.URL+"/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+fmt.Sprint(time.Now().UnixNano()),
		strings.NewReader(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body)))
	req.Header.Set("Authorization", "Bearer "+u.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("sending %q: %v", body, err)
		return false
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("sending %q: %d", body, resp.StatusCode)
		return false
	}
	return true
}

// The invitee's server gets an invite through /invite (it signs it there)
// and not a second time as a PDU in a transaction, where it would be an
// event of a room that server is not in.
func TestRemoteInviteIsNotSentAgainInATransaction(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		var mu sync.Mutex
		var txns []string
		fed[1].WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
					body, _ := io.ReadAll(r.Body)
					r.Body = io.NopCloser(bytes.NewReader(body))
					mu.Lock()
					txns = append(txns, string(body))
					mu.Unlock()
				}
				fedH.ServeHTTP(w, r)
			})
		})
		bobSync := newSyncer(t, bob)
		r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "private_chat", "invite": []string{bob.id}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		bobSync.until(t, "the invite", func(resp map[string]any) bool { return get(resp, "rooms", "invite", roomID) != nil })
		r = bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(alice.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		// A's queue to B is in order: once this message is through, an
		// invite queued before it would have been too.
		alice.send(t, roomID, "after the invite")
		bob.waitForMessage(t, roomID, "after the invite")
		mu.Lock()
		defer mu.Unlock()
		seen := false
		for _, txn := range txns {
			if strings.Contains(txn, `"membership":"invite"`) {
				t.Fatalf("B got the invite again in a transaction: %s", txn)
			}
			seen = seen || strings.Contains(txn, "after the invite")
		}
		if !seen {
			t.Fatalf("B got alice's message, but not in any transaction it was sent")
		}
	})
}

// TestInviteRoomStateValidation: for a room version after 11, an invite
// whose invite_room_state has an entry that is not an event of the room
// version, fails the hash or signature checks, belongs to another room,
// or lacks the create event is refused with 400 M_INVALID_PARAM (v1.16);
// the same invite with its state as B sent it is accepted. B's real
// invite is captured at A and replayed, signed with B's key, changed.
func TestInviteRoomStateValidation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		alice, bob := newFedUser(t, a, "alice"), newFedUser(t, bs, "bob")
		var mu sync.Mutex
		captured := map[string][]byte{} // by room ID
		paths := map[string]string{}
		a.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v2/invite/") {
					body, _ := io.ReadAll(r.Body)
					var inv struct {
						Event struct {
							RoomID string `json:"room_id"`
						} `json:"event"`
					}
					_ = json.Unmarshal(body, &inv)
					mu.Lock()
					paths[inv.Event.RoomID], captured[inv.Event.RoomID] = r.URL.RequestURI(), body
					mu.Unlock()
					http.Error(w, `{"errcode":"M_UNKNOWN","error":"captured"}`, http.StatusInternalServerError)
					return
				}
				fedH.ServeHTTP(w, r)
			})
		})
		other := bob.createRoom(t, map[string]any{"room_version": "12", "name": "Other room"})
		roomID := bob.createRoom(t, map[string]any{"room_version": "12", "preset": "private_chat", "name": "Room on B"})
		var r hearthtest.Response
		for _, id := range []string{other, roomID} {
			r = bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(id)+"/invite", map[string]any{"user_id": alice.id})
			if r.Status == http.StatusOK {
				t.Fatalf("the captured invite succeeded: %s", r.Body)
			}
		}
		mu.Lock()
		p, orig, otherOrig := paths[roomID], captured[roomID], captured[other]
		mu.Unlock()
		if orig == nil || otherOrig == nil {
			t.Fatal("no invite reached A")
		}
		a.WrapFederation(func(fedH, _ http.Handler) http.Handler { return fedH })
		var body map[string]json.RawMessage
		if err := json.Unmarshal(orig, &body); err != nil {
			t.Fatal(err)
		}
		var state []map[string]any
		if err := json.Unmarshal(body["invite_room_state"], &state); err != nil || len(state) < 2 {
			t.Fatalf("invite_room_state: %s", body["invite_room_state"])
		}
		put := func(st any) hearthtest.Response {
			t.Helper()
			b := map[string]any{"room_version": json.RawMessage(body["room_version"]), "event": json.RawMessage(body["event"]), "invite_room_state": st}
			return signedPut(t, bs, a, p, b)
		}
		clone := func() []map[string]any {
			var out []map[string]any
			_ = json.Unmarshal(body["invite_room_state"], &out)
			return out
		}
		find := func(st []map[string]any, typ string) int {
			for i, ev := range st {
				if ev["type"] == typ {
					return i
				}
			}
			t.Fatalf("no %s in invite_room_state", typ)
			return -1
		}
		// Each case with the words its refusal names.
		cases := map[string][]map[string]any{}
		why := map[string]string{"stripped entry": "is not an event of room version", "content changed": "content hash",
			"signature broken": "signature check", "other room": "is not an event of room !", "no create": "lacks the m.room.create"}
		// Not formatted for the room version: a stripped event.
		st := clone()
		st = append(st, map[string]any{"type": "m.room.topic", "state_key": "", "sender": bob.id, "content": map[string]any{"topic": "t"}})
		cases["stripped entry"] = st
		// Hash check: the name changed after signing.
		st = clone()
		st[find(st, "m.room.name")]["content"] = map[string]any{"name": "Forged"}
		cases["content changed"] = st
		// Signature check: B's signature replaced by another valid-looking one.
		st = clone()
		jr := st[find(st, "m.room.join_rules")]
		sigs := jr["signatures"].(map[string]any)[bs.Config.ServerName].(map[string]any)
		for k, v := range sigs {
			sig := []byte(v.(string))
			sig[0] ^= 1 // still base64, no longer B's
			if sig[0] == '+' || sig[0] == '/' {
				sig[0] = 'A'
			}
			sigs[k] = string(sig)
		}
		cases["signature broken"] = st
		// Another room's event: the other room's name event, as B signed it.
		var otherBody struct {
			State []map[string]any `json:"invite_room_state"`
		}
		if err := json.Unmarshal(otherOrig, &otherBody); err != nil {
			t.Fatal(err)
		}
		st = clone()
		st[find(st, "m.room.name")] = otherBody.State[find(otherBody.State, "m.room.name")]
		cases["other room"] = st
		// No create event.
		st = clone()
		st = append(st[:find(st, "m.room.create")], st[find(st, "m.room.create")+1:]...)
		cases["no create"] = st
		for name, st := range cases {
			r := put(st)
			if r.Status != http.StatusBadRequest || r.ErrCode() != "M_INVALID_PARAM" || !strings.Contains(fmt.Sprint(r.JSON["error"]), why[name]) {
				t.Errorf("%s: %d %v", name, r.Status, r.JSON)
			}
		}
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync", nil), http.StatusOK, "")
		if r := alice.do(t, "GET", "/_matrix/client/v3/sync", nil); strings.Contains(string(r.Body), roomID) {
			t.Fatalf("a refused invite reached alice: %s", r.Body)
		}
		// As B sent it: accepted.
		r = put(json.RawMessage(body["invite_room_state"]))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r := alice.do(t, "GET", "/_matrix/client/v3/sync", nil); !strings.Contains(string(r.Body), roomID) {
			t.Fatalf("the valid invite did not reach alice: %s", r.Body)
		}
	})
}

// signedPut makes a PUT with a JSON body from server `from` to server
// `to`, signed with from's key.
func signedPut(t *testing.T, from, to *hearthtest.Server, path string, body any) hearthtest.Response {
	t.Helper()
	fr := fclient.NewFederationRequest(http.MethodPut, serverName(from), serverName(to), path)
	if err := fr.SetContent(body); err != nil {
		t.Fatal(err)
	}
	if err := fr.Sign(serverName(from), from.Key.ID, from.Key.Private); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "https", string(serverName(to))
	resp, err := to.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out hearthtest.Response
	out.Status = resp.StatusCode
	out.Body, _ = io.ReadAll(resp.Body)
	_ = json.Unmarshal(out.Body, &out.JSON)
	return out
}
