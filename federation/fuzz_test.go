package federation_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// FuzzXMatrixAuthorization: the X-Matrix header as auth.go reads it
// (fclient.ParseAuthorization) gives back, from a header rendered with the
// values it parsed, the same values; and a request carrying the header
// (unsigned, or signed with garbage) to a real server is refused with 400
// or 401, never a 5xx or a 200. Headers naming a valid origin other than
// the test servers are only parsed: checking them would fetch that
// server's keys over the network.
func FuzzXMatrixAuthorization(f *testing.F) {
	fed := hearthtest.NewFederation(f, hearthtest.SQLite, 2, nil)
	a, b := fed[0], fed[1]
	an, bn := serverName(a), serverName(b)
	for _, h := range []string{
		`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."`,
		`X-Matrix origin=origin.example.com,key="ed25519:key1",sig="dGVzdA"`,
		`X-Matrix origin="` + string(an) + `",destination="` + string(bn) + `",key="ed25519:a_AAAA",sig="dGVzdA"`,
		`X-Matrix origin="` + string(an) + `",key="` + string(a.Key.ID) + `",sig="` + strings.Repeat("A", 86) + `"`,
		`X-Matrix origin="` + string(bn) + `",key="ed25519:x",sig="x"`,
		`X-Matrix origin="[::1]:1",destination="elsewhere.example",key="ed25519:x",sig="x"`,
		`X-Matrix `, `X-Matrix`, `Bearer abc`, `X-Matrix origin="",key="",sig=""`, `X-Matrix ,,,==,origin="a"`, `X-Matrix origin="a b:0"`,
	} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		scheme, origin, dest, key, sig := fclient.ParseAuthorization(h)
		if scheme == "X-Matrix" && renderable(string(origin), string(dest), string(key), sig) {
			re := fmt.Sprintf(`X-Matrix origin="%s",destination="%s",key="%s",sig="%s"`, origin, dest, key, sig)
			s2, o2, d2, k2, sig2 := fclient.ParseAuthorization(re)
			if s2 != scheme || o2 != origin || d2 != dest || k2 != key || sig2 != sig {
				t.Fatalf("%q parsed to %q %q %q %q; rendered %q it parses to %q %q %q %q", h, origin, dest, key, sig, re, o2, d2, k2, sig2)
			}
		}
		_, _, validOrigin := spec.ParseAndValidateServerName(origin)
		if strings.HasPrefix(h, "X-Matrix ") && validOrigin && origin != an && origin != bn && (dest == "" || dest == bn) {
			return // would fetch the keys of a server that does not exist
		}
		req, err := http.NewRequest("GET", b.FederationURL+"/_matrix/federation/v1/query/profile?user_id=%40x%3Ay", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", h)
		resp, err := b.Client.Do(req)
		if err != nil {
			return // not a header net/http sends
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("Authorization %q: status %d", h, resp.StatusCode)
		}
	})
}

func renderable(vals ...string) bool {
	for _, v := range vals {
		if strings.ContainsAny(v, `,"`) || strings.TrimSpace(v) != v {
			return false
		}
	}
	return true
}

// FuzzSendTransaction sends fuzzed transaction bodies, signed by a real
// origin server, to PUT /send on a real server that has a room of every
// supported version ("$ROOM" in the body stands for the room of version
// index v). The answer is 200 with a result per PDU that had an event ID,
// or 400/413 for bodies that are not a transaction; never a 5xx.
func FuzzSendTransaction(f *testing.F) {
	fed := hearthtest.NewFederation(f, hearthtest.SQLite, 2, nil)
	a, b := fed[0], fed[1]
	_, tok := b.RegisterUser(f, "bob")
	roomIDs := make([]string, len(rooms.SupportedVersions))
	for i, v := range rooms.SupportedVersions {
		r := b.Do(f, "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{"room_version": string(v)})
		hearthtest.Expect(f, r, http.StatusOK, "")
		roomIDs[i] = r.JSON["room_id"].(string)
	}
	seed := func(v int, pdus []json.RawMessage, edus []gomatrixserverlib.EDU) {
		body, err := json.Marshal(map[string]any{"origin": serverName(a), "origin_server_ts": 1234567890, "pdus": pdus, "edus": edus})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(body, uint8(v))
	}
	for i, v := range rooms.SupportedVersions {
		ver := gomatrixserverlib.MustGetRoomVersion(v)
		proto := gomatrixserverlib.ProtoEvent{SenderID: "@mallory:" + a.Config.ServerName, RoomID: roomIDs[i], Type: "m.room.message",
			Content: []byte(`{"msgtype":"m.text","body":"hi"}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 5}
		if v == gomatrixserverlib.RoomVersionV1 || v == gomatrixserverlib.RoomVersionV2 {
			proto.PrevEvents, proto.AuthEvents = []any{}, []any{}
		}
		ev, err := ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			f.Fatal(err)
		}
		seed(i, []json.RawMessage{ev.JSON(), bytes.ReplaceAll(ev.JSON(), []byte(roomIDs[i]), []byte("$ROOM"))}, nil)
	}
	seed(10, []json.RawMessage{json.RawMessage(`{"room_id":"$ROOM","type":5}`), json.RawMessage(`"not an object"`), json.RawMessage(`{}`)},
		[]gomatrixserverlib.EDU{{Type: "m.typing", Content: []byte(`{"room_id":"$ROOM","user_id":"@mallory:` + a.Config.ServerName + `","typing":true}`)},
			{Type: "m.receipt", Content: []byte(`{"$ROOM":{"m.read":{"@mallory:x":{"event_ids":["$e"],"data":{"ts":1}}}}}`)},
			{Type: "m.presence", Content: []byte(`{"push":[{"user_id":"@mallory:x","presence":"online"}]}`)},
			{Type: "m.direct_to_device", Content: []byte(`{"sender":"@mallory:x","type":"m.x","message_id":"1","messages":{"@bob:x":{"*":{}}}}`)},
			{Type: "m.device_list_update", Content: []byte(`{"user_id":"@mallory:x","device_id":"D","stream_id":1}`)},
			{Type: "m.signing_key_update", Content: []byte(`{"user_id":"@mallory:x"}`)}})
	for _, s := range []string{`{}`, `{"pdus":{}}`, `{"pdus":[1,2],"edus":[{"edu_type":5}]}`, `[]`, `null`, `{"edus":[{"edu_type":"m.typing","content":[]}]}`} {
		f.Add([]byte(s), uint8(0))
	}
	var txn atomic.Int64
	f.Fuzz(func(t *testing.T, body []byte, v uint8) {
		body = bytes.ReplaceAll(body, []byte("$ROOM"), []byte(roomIDs[int(v)%len(roomIDs)]))
		if !json.Valid(body) {
			return // cannot be signed: authentication refuses it before /send
		}
		path := fmt.Sprintf("/_matrix/federation/v1/send/fuzz%d", txn.Add(1))
		fr := fclient.NewFederationRequest("PUT", serverName(a), serverName(b), path)
		if err := fr.SetContent(json.RawMessage(body)); err != nil {
			return
		}
		if err := fr.Sign(serverName(a), a.Key.ID, a.Key.Private); err != nil {
			t.Fatal(err)
		}
		req, err := fr.HTTPRequest()
		if err != nil {
			t.Fatal(err)
		}
		req.URL.Scheme, req.URL.Host = "https", string(serverName(b))
		resp, err := b.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			PDUs    map[string]fclient.PDUResult `json:"pdus"`
			ErrCode string                       `json:"errcode"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("%s: status %d, body not JSON: %v", body, resp.StatusCode, err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			var in struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			_ = json.Unmarshal(body, &in)
			if len(out.PDUs) > len(in.PDUs) {
				t.Fatalf("%s: %d results for %d PDUs", body, len(out.PDUs), len(in.PDUs))
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnauthorized:
			if out.ErrCode == "" {
				t.Fatalf("%s: status %d without an errcode", body, resp.StatusCode)
			}
		default:
			t.Fatalf("%s: status %d (%s)", body, resp.StatusCode, out.ErrCode)
		}
	})
}
