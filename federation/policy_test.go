package federation_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// policyRoom is a room on B protected by A as its policy server (A refuses
// the word "spam"), with carol of C, a server that sends events without
// asking A (forged by the test with C's key), joined too.
type policyRoom struct {
	fed               []*hearthtest.Server
	a, b, c           *hearthtest.Server
	bob, guard, carol fedUser
	roomID, policyKey string
	policyKeyPub      ed25519.PublicKey
	policyEventID     string
}

func newPolicyRoom(t *testing.T, be hearthtest.Backend) *policyRoom {
	t.Helper()
	fed := hearthtest.NewFederation(t, be, 3, func(i int, c *config.Config) {
		if i == 0 {
			c.PolicyServer = true
			c.PolicyServerRefusedWords = []string{"SPAM"}
		}
	})
	p := &policyRoom{fed: fed, a: fed[0], b: fed[1], c: fed[2]}
	p.guard, p.bob, p.carol = newFedUser(t, p.a, "guard"), newFedUser(t, p.b, "bob"), newFedUser(t, p.c, "carol")
	p.roomID = p.bob.createRoom(t, map[string]any{"preset": "public_chat", "room_version": "11"})
	for _, u := range []fedUser{p.guard, p.carol} {
		r := u.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(p.roomID)+"?server_name="+url.QueryEscape(p.b.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		p.bob.waitMembership(t, p.roomID, u.id, "join")
	}

	// The key as a client finds it (/.well-known/matrix/policy_server).
	r := hearthtest.Do(t, http.DefaultClient, "GET", p.a.URL+"/.well-known/matrix/policy_server", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	p.policyKey = gjson.GetBytes(r.Body, "public_keys.ed25519").Str
	key, err := base64.RawStdEncoding.DecodeString(p.policyKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		t.Fatalf("policy key %q: %v", p.policyKey, err)
	}
	if p.policyKey == base64.RawStdEncoding.EncodeToString(p.a.Key.Public()) {
		t.Fatal("the policy key is the server's signing key")
	}
	p.policyKeyPub = key
	hearthtest.Expect(t, hearthtest.Do(t, http.DefaultClient, "GET", p.b.URL+"/.well-known/matrix/policy_server", "", nil), http.StatusNotFound, "")

	p.policyEventID = p.bob.setState(t, p.roomID, "m.room.policy", map[string]any{
		"via": p.a.Config.ServerName, "public_keys": map[string]any{"ed25519": p.policyKey}})
	for _, s := range fed {
		waitEvent(t, s, p.policyEventID)
	}
	return p
}

func (u fedUser) setState(t *testing.T, roomID, evType string, content any) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType+"/", content)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

func (u fedUser) sendText(t *testing.T, roomID, body string) hearthtest.Response {
	t.Helper()
	return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+body+time.Now().Format("150405.000000000"),
		map[string]any{"msgtype": "m.text", "body": body})
}

// waitEvent waits until server s has stored eventID, and returns it.
func waitEvent(t *testing.T, s *hearthtest.Server, eventID string) storage.Event {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ev, err := storage.GetEvent(context.Background(), s.DB.Read(), eventID)
		if err == nil {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never stored %s: %v", s.Config.ServerName, eventID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// policySigned reports whether an event's JSON carries a valid signature of
// the policy server under its policy key.
func (p *policyRoom) policySigned(t *testing.T, js []byte) bool {
	t.Helper()
	redacted, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).RedactEventJSON(js)
	if err != nil {
		t.Fatal(err)
	}
	return gomatrixserverlib.VerifyJSON(p.a.Config.ServerName, "ed25519:policy_server", p.policyKeyPub, redacted) == nil
}

// timeline is the room's messages as u's server shows them.
func (u fedUser) timeline(t *testing.T, roomID string) string {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return string(r.Body)
}

// forge builds an event of carol's on C as a server that does not ask the
// policy server would send it, on B's head, with sig (if any) as the
// policy server's signature.
func (p *policyRoom) forge(t *testing.T, body, sig string) gomatrixserverlib.PDU {
	t.Helper()
	ctx := context.Background()
	q := p.b.DB.Read()
	room, err := storage.GetRoom(ctx, q, p.roomID)
	if err != nil {
		t.Fatal(err)
	}
	var auth []string
	for _, k := range [][2]string{{"m.room.create", ""}, {"m.room.power_levels", ""}, {"m.room.member", p.carol.id}} {
		id, err := storage.CurrentStateEventID(ctx, q, p.roomID, k[0], k[1])
		if err != nil || id == "" {
			t.Fatalf("state %v: %q %v", k, id, err)
		}
		auth = append(auth, id)
	}
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": body})
	proto := gomatrixserverlib.ProtoEvent{SenderID: p.carol.id, RoomID: p.roomID, Type: "m.room.message", Content: content,
		PrevEvents: room.Extremities, AuthEvents: auth, Depth: room.MaxDepth + 1}
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(p.c), p.c.Key.ID, p.c.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	if sig == "" {
		return ev
	}
	var m map[string]any
	_ = json.Unmarshal(ev.JSON(), &m)
	m["signatures"].(map[string]any)[p.a.Config.ServerName] = map[string]any{"ed25519:policy_server": sig}
	b, _ := json.Marshal(m)
	if ev, err = ver.NewEventFromTrustedJSON(b, false); err != nil {
		t.Fatal(err)
	}
	return ev
}

// push sends pdu from C to B in a transaction.
func (p *policyRoom) push(t *testing.T, pdu gomatrixserverlib.PDU) {
	t.Helper()
	res, err := p.c.Federation.Client().SendTransaction(context.Background(), gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(pdu.EventID()), Origin: serverName(p.c), Destination: serverName(p.b),
		OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{pdu.JSON()}})
	if err != nil {
		t.Fatal(err)
	}
	if r := res.PDUs[pdu.EventID()]; r.Error != "" {
		t.Fatalf("B answered %q for %s", r.Error, pdu.EventID())
	}
}

// Events sent in a room that uses a policy server carry its signature
// (asked for by B for bob's events; made by A itself for its own users'),
// and an event it refuses is not sent: the client gets the policy server's
// error as it gave it. The m.room.policy event itself is never signed.
func TestPolicyServerSignsEvents(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, be hearthtest.Backend) {
		p := newPolicyRoom(t, be)
		if ev := waitEvent(t, p.b, p.policyEventID); p.policySigned(t, ev.JSON) {
			t.Fatal("the m.room.policy event has a policy server signature")
		}

		r := p.bob.sendText(t, p.roomID, "hello")
		hearthtest.Expect(t, r, http.StatusOK, "")
		hello := r.JSON["event_id"].(string)
		nameID := p.bob.setState(t, p.roomID, "m.room.name", map[string]any{"name": "guarded"})
		r = p.guard.sendText(t, p.roomID, "from the guard")
		hearthtest.Expect(t, r, http.StatusOK, "")
		guardMsg := r.JSON["event_id"].(string)
		for _, s := range p.fed {
			for _, id := range []string{hello, nameID, guardMsg} {
				ev := waitEvent(t, s, id)
				if !p.policySigned(t, ev.JSON) || ev.SoftFailed || ev.Rejected {
					t.Fatalf("%s on %s: policy signed %v, soft-failed %v, rejected %v: %s",
						id, s.Config.ServerName, p.policySigned(t, ev.JSON), ev.SoftFailed, ev.Rejected, ev.JSON)
				}
			}
		}
		p.carol.waitForMessage(t, p.roomID, "hello")
		p.bob.waitForMessage(t, p.roomID, "from the guard")

		// Refused: by A for bob's event on B, and by A for its own user's.
		for _, u := range []fedUser{p.bob, p.guard} {
			r = u.sendText(t, p.roomID, "cheap Spam here")
			hearthtest.Expect(t, r, http.StatusBadRequest, "M_FORBIDDEN")
			if !strings.Contains(r.JSON["error"].(string), "policy server refuses") {
				t.Fatalf("not the policy server's error: %s", r.Body)
			}
		}
		r = p.bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(p.roomID)+"/state/m.room.topic/", map[string]any{"topic": "spam"})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_FORBIDDEN")
		if tl := p.bob.timeline(t, p.roomID); strings.Contains(strings.ToLower(tl), "spam") {
			t.Fatalf("a refused event is in the room: %s", tl)
		}
		hearthtest.Expect(t, p.bob.sendText(t, p.roomID, "still fine"), http.StatusOK, "")

		// An invite to another server's user is signed before the invitee's
		// server sees it.
		dave, eve := newFedUser(t, p.c, "dave"), newFedUser(t, p.c, "eve")
		invite := func(u fedUser, reason string) hearthtest.Response {
			return p.bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(p.roomID)+"/invite", map[string]any{"user_id": u.id, "reason": reason})
		}
		hearthtest.Expect(t, invite(dave, "welcome"), http.StatusOK, "")
		id, err := storage.CurrentStateEventID(context.Background(), p.b.DB.Read(), p.roomID, "m.room.member", dave.id)
		if err != nil || id == "" {
			t.Fatalf("dave's invite: %q %v", id, err)
		}
		if ev := waitEvent(t, p.b, id); !p.policySigned(t, ev.JSON) {
			t.Fatalf("the invite is not signed by the policy server: %s", ev.JSON)
		}
		hearthtest.Expect(t, invite(eve, "spam"), http.StatusBadRequest, "M_FORBIDDEN")
		if m, _, _ := storage.CurrentMembership(context.Background(), p.b.DB.Read(), p.roomID, eve.id); m != "" {
			t.Fatalf("eve's refused invite is %q", m)
		}

		// A restarted server (which has not seen m.room.policy since) finds
		// the policy server in the send's transaction and asks it then.
		p.b.Restart(t)
		r = p.bob.sendText(t, p.roomID, "after a restart")
		hearthtest.Expect(t, r, http.StatusOK, "")
		if ev := waitEvent(t, p.b, r.JSON["event_id"].(string)); !p.policySigned(t, ev.JSON) {
			t.Fatalf("not signed after a restart: %s", ev.JSON)
		}

		// An upgrade's events in the old room (the tombstone, the power
		// levels that silence it) are signed too.
		r = p.bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(p.roomID)+"/upgrade", map[string]any{"new_version": "11"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		tomb, err := storage.CurrentStateEventID(context.Background(), p.b.DB.Read(), p.roomID, "m.room.tombstone", "")
		if err != nil || tomb == "" {
			t.Fatalf("no tombstone: %v", err)
		}
		if ev := waitEvent(t, p.b, tomb); !p.policySigned(t, ev.JSON) {
			t.Fatalf("the tombstone is not signed: %s", ev.JSON)
		}
		if ev := waitEvent(t, p.a, tomb); ev.SoftFailed {
			t.Fatal("the policy server soft-failed the tombstone")
		}
	})
}

// A received event without the policy server's signature is sent to it
// for one (check 7): signed, it is accepted and kept with the signature;
// refused, or with a signature that is not valid and refused again, it is
// soft-failed: stored, never shown.
func TestPolicyServerReceivedEvents(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, be hearthtest.Backend) {
		p := newPolicyRoom(t, be)

		neutral := p.forge(t, "unsigned but fine", "")
		p.push(t, neutral)
		ev := waitEvent(t, p.b, neutral.EventID())
		if ev.SoftFailed || !p.policySigned(t, ev.JSON) {
			t.Fatalf("the neutral event: soft-failed %v, signed %v: %s", ev.SoftFailed, p.policySigned(t, ev.JSON), ev.JSON)
		}
		p.bob.waitForMessage(t, p.roomID, "unsigned but fine")

		spam := p.forge(t, "unsigned SPAM", "")
		p.push(t, spam)
		if ev := waitEvent(t, p.b, spam.EventID()); !ev.SoftFailed || ev.Rejected {
			t.Fatalf("the refused event: soft-failed %v, rejected %v", ev.SoftFailed, ev.Rejected)
		}
		badSig := p.forge(t, "forged signature spam", strings.Repeat("A", 86))
		p.push(t, badSig)
		if ev := waitEvent(t, p.b, badSig.EventID()); !ev.SoftFailed {
			t.Fatal("the event with a bad policy signature was not soft-failed")
		}
		// Soft-failed events are not extremities: the next event does not
		// follow them, and neither is shown.
		r := p.bob.sendText(t, p.roomID, "after")
		hearthtest.Expect(t, r, http.StatusOK, "")
		after := waitEvent(t, p.b, r.JSON["event_id"].(string))
		prevs := gjson.GetBytes(after.JSON, "prev_events").String()
		if strings.Contains(prevs, spam.EventID()) || strings.Contains(prevs, badSig.EventID()) {
			t.Fatalf("the next event follows a soft-failed one: %s", prevs)
		}
		if tl := p.bob.timeline(t, p.roomID); strings.Contains(strings.ToLower(tl), "spam") {
			t.Fatalf("a soft-failed event is shown: %s", tl)
		}
	})
}

// With the policy server down, nothing can be sent (the client gets 502)
// and received events without its signature are soft-failed, until it is
// back or the room clears m.room.policy, which needs no signature; a room
// whose policy server has no member in it does not use it.
func TestPolicyServerDown(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, be hearthtest.Backend) {
		p := newPolicyRoom(t, be)
		p.a.FederationDown(t)

		r := p.bob.sendText(t, p.roomID, "while down")
		hearthtest.Expect(t, r, http.StatusBadGateway, "M_UNKNOWN")
		if strings.Contains(p.bob.timeline(t, p.roomID), "while down") {
			t.Fatal("the unsigned event was sent")
		}
		unsigned := p.forge(t, "pushed while down", "")
		p.push(t, unsigned)
		if ev := waitEvent(t, p.b, unsigned.EventID()); !ev.SoftFailed {
			t.Fatal("an unsigned event was accepted while the policy server is down")
		}

		// Back up: sends are signed again, and received events too.
		p.a.WrapFederation(func(fed, _ http.Handler) http.Handler { return fed })
		r = p.bob.sendText(t, p.roomID, "back up")
		hearthtest.Expect(t, r, http.StatusOK, "")
		if ev := waitEvent(t, p.b, r.JSON["event_id"].(string)); !p.policySigned(t, ev.JSON) {
			t.Fatal("not signed once the policy server is back")
		}
		later := p.forge(t, "pushed once back", "")
		p.push(t, later)
		if ev := waitEvent(t, p.b, later.EventID()); ev.SoftFailed || !p.policySigned(t, ev.JSON) {
			t.Fatal("a received event was not signed once the policy server is back")
		}
		p.a.FederationDown(t)

		cleared := p.bob.setState(t, p.roomID, "m.room.policy", map[string]any{})
		hearthtest.Expect(t, p.bob.sendText(t, p.roomID, "policy cleared"), http.StatusOK, "")
		waitEvent(t, p.c, cleared)

		// A again named, but with no member in the room: not used.
		p.bob.setState(t, p.roomID, "m.room.policy", map[string]any{
			"via": p.a.Config.ServerName, "public_keys": map[string]any{"ed25519": p.policyKey}})
		r = p.bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(p.roomID)+"/kick", map[string]any{"user_id": p.guard.id})
		hearthtest.Expect(t, r, http.StatusBadGateway, "M_UNKNOWN") // the kick itself needs the signature
		hearthtest.Expect(t, p.bob.sendText(t, p.roomID, "still down"), http.StatusBadGateway, "M_UNKNOWN")
		p.bob.setState(t, p.roomID, "m.room.policy", map[string]any{})
		r = p.bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(p.roomID)+"/kick", map[string]any{"user_id": p.guard.id})
		hearthtest.Expect(t, r, http.StatusOK, "")
		p.bob.setState(t, p.roomID, "m.room.policy", map[string]any{
			"via": p.a.Config.ServerName, "public_keys": map[string]any{"ed25519": p.policyKey}})
		hearthtest.Expect(t, p.bob.sendText(t, p.roomID, "no guard no policy"), http.StatusOK, "")
	})
}

// The /sign endpoint's errors.
func TestPolicySignEndpoint(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, be hearthtest.Backend) {
		p := newPolicyRoom(t, be)
		post := func(to *hearthtest.Server, body []byte) hearthtest.Response {
			t.Helper()
			fr := fclient.NewFederationRequest(http.MethodPost, serverName(p.c), serverName(to), "/_matrix/policy/v1/sign")
			if json.Valid(body) {
				if err := fr.SetContent(json.RawMessage(body)); err != nil {
					t.Fatal(err)
				}
			}
			if err := fr.Sign(serverName(p.c), p.c.Key.ID, p.c.Key.Private); err != nil {
				t.Fatal(err)
			}
			req, err := fr.HTTPRequest()
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(body) {
				req.Body = http.NoBody
			}
			return sendTo(t, to, req)
		}
		neutral := p.forge(t, "fine", "")
		r := post(p.a, neutral.JSON())
		hearthtest.Expect(t, r, http.StatusOK, "")
		sig, _ := r.JSON[p.a.Config.ServerName].(map[string]any)["ed25519:policy_server"].(string)
		if len(r.JSON) != 1 || sig == "" {
			t.Fatalf("answer: %v", r.JSON)
		}
		if !p.policySigned(t, withSig(t, neutral, p.a.Config.ServerName, sig)) {
			t.Fatal("the returned signature does not verify")
		}
		hearthtest.Expect(t, post(p.a, p.forge(t, "SPAM", "").JSON()), http.StatusBadRequest, "M_FORBIDDEN")
		hearthtest.Expect(t, post(p.b, neutral.JSON()), http.StatusNotFound, "M_UNRECOGNIZED")
		hearthtest.Expect(t, post(p.a, []byte(`{"room_id":"!nowhere:`+p.a.Config.ServerName+`","type":"m.room.message"}`)), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, post(p.a, []byte(`{"room_id":"`+p.roomID+`","type":"m.room.message"}`)), http.StatusBadRequest, "M_BAD_JSON")
		policyEv := waitEvent(t, p.a, p.policyEventID)
		hearthtest.Expect(t, post(p.a, policyEv.JSON), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, post(p.a, []byte("")), http.StatusBadRequest, "M_NOT_JSON") // the body is required
	})
}

// withSig is pdu's JSON with a signature of server's policy key added.
func withSig(t *testing.T, pdu gomatrixserverlib.PDU, server, sig string) []byte {
	t.Helper()
	var m map[string]any
	_ = json.Unmarshal(pdu.JSON(), &m)
	m["signatures"].(map[string]any)[server] = map[string]any{"ed25519:policy_server": sig}
	b, _ := json.Marshal(m)
	return b
}
