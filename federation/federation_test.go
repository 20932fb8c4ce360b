package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/netguard"
	"github.com/hearth-matrix/hearth/storage"
)

func serverName(s *hearthtest.Server) spec.ServerName { return spec.ServerName(s.Config.ServerName) }

// signedGet makes a GET from server `from` to server `to`, signed with key
// under keyID (normally from's own key).
func signedGet(t *testing.T, from, to *hearthtest.Server, path string, keyID gomatrixserverlib.KeyID, key ed25519.PrivateKey, destination spec.ServerName) hearthtest.Response {
	t.Helper()
	fr := fclient.NewFederationRequest(http.MethodGet, serverName(from), destination, path)
	if err := fr.Sign(serverName(from), keyID, key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	return sendTo(t, to, req)
}

// sendTo sends a request made for server `to` to its federation listener.
func sendTo(t *testing.T, to *hearthtest.Server, req *http.Request) hearthtest.Response {
	t.Helper()
	req.URL.Scheme, req.URL.Host = "https", string(serverName(to))
	resp, err := to.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out hearthtest.Response
	out.Status = resp.StatusCode
	_ = json.NewDecoder(resp.Body).Decode(&out.JSON)
	return out
}

func TestXMatrixAuthAndKeyFetch(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		bob, _ := bs.RegisterUser(t, "bob")
		path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(bob)

		// Signed by A with its key: B fetches A's key from A and accepts.
		r := signedGet(t, a, bs, path, a.Key.ID, a.Key.Private, serverName(bs))
		if r.Status != http.StatusOK {
			t.Fatalf("signed request: %d %v", r.Status, r.JSON)
		}
		keys, err := storage.ServerKeysOf(context.Background(), bs.DB.Read(), []string{string(serverName(a))})
		if err != nil || len(keys) != 1 || keys[0].KeyID != string(a.Key.ID) {
			t.Fatalf("B stored A's keys: %v %v", keys, err)
		}

		// No signature, a signature by a key A does not have, a request
		// for another destination: 401 M_UNAUTHORIZED.
		hearthtest.Expect(t, hearthtest.Do(t, bs.Client, "GET", bs.FederationURL+path, "", nil), http.StatusUnauthorized, "M_UNAUTHORIZED")
		_, forged, _ := ed25519.GenerateKey(rand.Reader)
		r = signedGet(t, a, bs, path, a.Key.ID, forged, serverName(bs))
		if r.Status != http.StatusUnauthorized || r.JSON["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("wrongly signed: %d %v", r.Status, r.JSON)
		}
		r = signedGet(t, a, bs, path, "ed25519:nosuchkey", forged, serverName(bs))
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("unknown key: %d %v", r.Status, r.JSON)
		}
		r = signedGet(t, a, bs, path, a.Key.ID, a.Key.Private, "elsewhere.example")
		if r.Status != http.StatusUnauthorized {
			t.Fatalf("other destination: %d %v", r.Status, r.JSON)
		}
	})
}

func TestNotaryKeyQuery(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		nameA, nameB := serverName(a), serverName(bs)

		// B as notary for A: A's response, signed by A and by B.
		r := hearthtest.Do(t, bs.Client, "GET", bs.FederationURL+"/_matrix/key/v2/query/"+string(nameA), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		var got struct {
			ServerKeys []json.RawMessage `json:"server_keys"`
		}
		if err := json.Unmarshal(r.Body, &got); err != nil || len(got.ServerKeys) != 1 {
			t.Fatalf("notary GET: %s", r.Body)
		}
		if err := gomatrixserverlib.VerifyJSON(string(nameA), a.Key.ID, a.Key.Public(), got.ServerKeys[0]); err != nil {
			t.Errorf("A's signature: %v", err)
		}
		if err := gomatrixserverlib.VerifyJSON(string(nameB), bs.Key.ID, bs.Key.Public(), got.ServerKeys[0]); err != nil {
			t.Errorf("notary signature: %v", err)
		}
		var keys gomatrixserverlib.ServerKeys
		if err := keys.UnmarshalJSON(got.ServerKeys[0]); err != nil || keys.ServerName != nameA {
			t.Fatalf("notary answer: %s", got.ServerKeys[0])
		}
		if _, ok := keys.VerifyKeys[a.Key.ID]; !ok {
			t.Errorf("A's key missing: %s", got.ServerKeys[0])
		}

		// POST for A, B itself and an unreachable server: two answers.
		r = hearthtest.Do(t, bs.Client, "POST", bs.FederationURL+"/_matrix/key/v2/query", "", map[string]any{
			"server_keys": map[string]any{string(nameA): map[string]any{}, string(nameB): map[string]any{}, "localhost:1": map[string]any{}},
		})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if err := json.Unmarshal(r.Body, &got); err != nil || len(got.ServerKeys) != 2 {
			t.Fatalf("notary POST: %s", r.Body)
		}
		names := map[spec.ServerName]bool{}
		for _, raw := range got.ServerKeys {
			var k gomatrixserverlib.ServerKeys
			if err := k.UnmarshalJSON(raw); err != nil {
				t.Fatal(err)
			}
			names[k.ServerName] = true
			if err := gomatrixserverlib.VerifyJSON(string(nameB), bs.Key.ID, bs.Key.Public(), raw); err != nil {
				t.Errorf("notary signature on %s: %v", k.ServerName, err)
			}
		}
		if !names[nameA] || !names[nameB] {
			t.Errorf("notary POST answered for %v", names)
		}
		hearthtest.Expect(t, hearthtest.Do(t, bs.Client, "POST", bs.FederationURL+"/_matrix/key/v2/query", "", "{"), http.StatusBadRequest, "M_NOT_JSON")
	})
}

func TestOldVerifyKeys(t *testing.T) {
	_, old, _ := ed25519.GenerateKey(rand.Reader)
	pub := spec.Base64Bytes(old.Public().(ed25519.PublicKey))
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		b, _ := json.Marshal(map[string]any{"ed25519:old": map[string]any{"key": pub, "expired_ts": 1700000000000}})
		writeFile(t, c.DataDir+"/old_signing_keys.json", b)
	})
	r := hearthtest.Do(t, hs.Client, "GET", hs.FederationURL+"/_matrix/key/v2/server", "", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	var keys gomatrixserverlib.ServerKeys
	if err := keys.UnmarshalJSON(r.Body); err != nil {
		t.Fatal(err)
	}
	if k, ok := keys.OldVerifyKeys["ed25519:old"]; !ok || k.ExpiredTS != 1700000000000 || string(k.Key) != string(pub) {
		t.Fatalf("old_verify_keys: %s", r.Body)
	}
	if err := gomatrixserverlib.VerifyJSON("hearth.test", hs.Key.ID, hs.Key.Public(), r.Body); err != nil {
		t.Fatal(err)
	}
}

// createRoom makes a room on s as a new local user and returns its ID and
// the user's token.
func createRoom(t *testing.T, s *hearthtest.Server, localpart string, body map[string]any) (string, string) {
	t.Helper()
	_, tok := s.RegisterUser(t, localpart)
	r := s.Do(t, "POST", "/_matrix/client/v3/createRoom", tok, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["room_id"].(string), tok
}

// remoteEvent builds a message event in roomID from a user on `from`,
// signed by from's key.
func remoteEvent(t *testing.T, from *hearthtest.Server, roomID string, n int) gomatrixserverlib.PDU {
	t.Helper()
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11)
	content, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": fmt.Sprint("hello ", n)})
	proto := gomatrixserverlib.ProtoEvent{SenderID: "@mallory:" + from.Config.ServerName, RoomID: roomID, Type: "m.room.message",
		Content: content, PrevEvents: []string{}, AuthEvents: []string{}, Depth: 5}
	ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(from), from.Key.ID, from.Key.Private)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestSendTransaction(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		roomID, tok := createRoom(t, bs, "bob", map[string]any{"room_version": "11"})
		client := a.Federation.Client()
		ctx := context.Background()
		send := func(txnID string, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) (fclient.RespSend, error) {
			return client.SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: gomatrixserverlib.TransactionID(txnID),
				Origin: serverName(a), Destination: serverName(bs), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: pdus, EDUs: edus})
		}

		// Limits: 51 PDUs or 101 EDUs are refused whole.
		many := make([]json.RawMessage, 51)
		for i := range many {
			many[i] = json.RawMessage(`{}`)
		}
		var he gomatrix.HTTPError
		if _, err := send("too-many-pdus", many, nil); !errors.As(err, &he) || he.Code != http.StatusBadRequest {
			t.Fatalf("51 PDUs: %v", err)
		}
		edus := make([]gomatrixserverlib.EDU, 101)
		for i := range edus {
			edus[i] = gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{}`)}
		}
		if _, err := send("too-many-edus", nil, edus); !errors.As(err, &he) || he.Code != http.StatusBadRequest {
			t.Fatalf("101 EDUs: %v", err)
		}

		// Per-PDU results: the events from a server with nobody in the room
		// are rejected (stored, never shown, no error back, as Synapse
		// does); malformed PDUs and PDUs for unknown rooms have no ID to
		// report under and are dropped; the others still get their results.
		ev1, ev2 := remoteEvent(t, a, roomID, 1), remoteEvent(t, a, roomID, 2)
		pdus := []json.RawMessage{ev1.JSON(), json.RawMessage(`{"room_id":"` + roomID + `","type":5}`),
			remoteEvent(t, a, "!unknown:"+bs.Config.ServerName, 3).JSON(), json.RawMessage(`"not an object"`), ev2.JSON()}
		res, err := send("txn1", pdus, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok1 := res.PDUs[ev1.EventID()]; !ok1 || len(res.PDUs) != 2 || res.PDUs[ev1.EventID()].Error != "" || res.PDUs[ev2.EventID()].Error != "" {
			t.Fatalf("per-PDU results: %+v", res.PDUs)
		}
		for _, ev := range []gomatrixserverlib.PDU{ev1, ev2} {
			r := bs.Do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(ev.EventID()), tok, nil)
			hearthtest.Expect(t, r, http.StatusNotFound, "M_NOT_FOUND")
		}

		// A repeated transaction ID gets the stored response, unprocessed.
		again, err := send("txn1", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(again.PDUs) != 2 || again.PDUs[ev1.EventID()] != res.PDUs[ev1.EventID()] {
			t.Fatalf("repeat of txn1: %+v", again.PDUs)
		}

		// Server ACL, case-insensitive and port-blind: A's PDUs are refused
		// with the ACL as reason.
		r := bs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.server_acl/", tok,
			map[string]any{"allow": []string{"*"}, "deny": []string{"LOCAL*"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		ev3 := remoteEvent(t, a, roomID, 4)
		res, err = send("txn2", []json.RawMessage{ev3.JSON()}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(res.PDUs[ev3.EventID()].Error, "server ACL") {
			t.Fatalf("ACL result: %+v", res.PDUs)
		}

		// EDUs from a server with nobody in the room, or about users of
		// another server, are ignored: no typing notification appears.
		typing := func(user string) gomatrixserverlib.EDU {
			c, _ := json.Marshal(map[string]any{"room_id": roomID, "user_id": user, "typing": true})
			return gomatrixserverlib.EDU{Type: "m.typing", Content: c}
		}
		if _, err := send("txn3", nil, []gomatrixserverlib.EDU{typing("@mallory:" + a.Config.ServerName), typing("@bob:" + bs.Config.ServerName)}); err != nil {
			t.Fatal(err)
		}
		if users, _ := bs.Typing.Users(roomID); len(users) != 0 {
			t.Fatalf("forged typing accepted: %v", users)
		}
	})
}

func TestQueriesAcrossServers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bs := fed[0], fed[1]
		roomID, bobTok := createRoom(t, bs, "bob", map[string]any{})
		bob := "@bob:" + bs.Config.ServerName
		alias := "#lounge:" + bs.Config.ServerName
		hearthtest.Expect(t, bs.Do(t, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), bobTok, map[string]any{"room_id": roomID}), http.StatusOK, "")
		hearthtest.Expect(t, bs.Do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(bob)+"/displayname", bobTok, map[string]any{"displayname": "Bob"}), http.StatusOK, "")

		// A's clients resolve B's alias and see B's user's profile.
		r := a.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["room_id"] != roomID || fmt.Sprint(r.JSON["servers"]) != "["+bs.Config.ServerName+"]" {
			t.Fatalf("remote alias: %s", r.Body)
		}
		hearthtest.Expect(t, a.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#nope:"+bs.Config.ServerName), "", nil), http.StatusNotFound, "M_NOT_FOUND")
		r = a.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob), "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["displayname"] != "Bob" {
			t.Fatalf("remote profile: %s", r.Body)
		}
		r = a.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob)+"/displayname", "", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		hearthtest.Expect(t, a.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape(bob)+"/avatar_url", "", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, a.Do(t, "GET", "/_matrix/client/v3/profile/"+url.PathEscape("@nobody:"+bs.Config.ServerName), "", nil), http.StatusNotFound, "M_NOT_FOUND")

		// The federation endpoints themselves.
		r = signedGet(t, a, bs, "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), a.Key.ID, a.Key.Private, serverName(bs))
		if r.Status != http.StatusOK || r.JSON["room_id"] != roomID {
			t.Fatalf("query/directory: %d %v", r.Status, r.JSON)
		}
		r = signedGet(t, a, bs, "/_matrix/federation/v1/query/profile?field=displayname&user_id="+url.QueryEscape(bob), a.Key.ID, a.Key.Private, serverName(bs))
		if r.Status != http.StatusOK || r.JSON["displayname"] != "Bob" || len(r.JSON) != 1 {
			t.Fatalf("query/profile: %d %v", r.Status, r.JSON)
		}
	})
}

func TestOutboundRefusesLoopbackUnlessAllowed(t *testing.T) {
	fed := hearthtest.NewFederation(t, hearthtest.SQLite, 2, func(i int, c *config.Config) {
		if i == 0 {
			c.FederationAllowCIDRs = nil
		}
	})
	_, err := fed[0].Federation.Client().GetServerKeys(context.Background(), serverName(fed[1]))
	if !errors.Is(err, netguard.ErrBlocked) {
		t.Fatalf("loopback dial with no allow list: %v", err)
	}
	if _, err := fed[1].Federation.Client().GetServerKeys(context.Background(), serverName(fed[0])); err != nil {
		t.Fatalf("loopback dial allowed by federation_allow_cidrs: %v", err)
	}
}
