package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// BenchmarkSendPolicyServer is one PUT /send on B in a room without a
// policy server, in one whose policy server is A (built in a rolled-back
// transaction, signed by A over federation, then committed), and on A in a
// room whose policy server is A itself (signed in the send's transaction).
func BenchmarkSendPolicyServer(b *testing.B) {
	fed := hearthtest.NewFederation(b, hearthtest.SQLite, 2, func(i int, c *config.Config) {
		if i == 0 {
			c.PolicyServer = true
			c.PolicyServerRefusedWords = []string{"spam"}
		}
	})
	guard, bob := newFedUser(b, fed[0], "guard"), newFedUser(b, fed[1], "bob")
	r := hearthtest.Do(b, http.DefaultClient, "GET", fed[0].URL+"/.well-known/matrix/policy_server", "", nil)
	key := r.JSON["public_keys"].(map[string]any)["ed25519"]
	policy := map[string]any{"via": fed[0].Config.ServerName, "public_keys": map[string]any{"ed25519": key}}
	room := func(u fedUser, withPolicy bool) string {
		r := u.hs.Do(b, "POST", "/_matrix/client/v3/createRoom", u.token, map[string]any{"preset": "public_chat"})
		roomID := r.JSON["room_id"].(string)
		if u.hs != guard.hs {
			r = guard.hs.Do(b, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(u.hs.Config.ServerName), guard.token, map[string]any{})
			hearthtest.Expect(b, r, http.StatusOK, "")
		}
		if withPolicy {
			r = u.hs.Do(b, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.policy/", u.token, policy)
			hearthtest.Expect(b, r, http.StatusOK, "")
		}
		return roomID
	}
	for _, c := range []struct {
		name   string
		u      fedUser
		policy bool
	}{{"none", bob, false}, {"remote", bob, true}, {"local", guard, true}} {
		roomID := room(c.u, c.policy)
		b.Run(c.name, func(b *testing.B) {
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
			start := cpuTime(b)
			for i := 0; b.Loop(); i++ {
				r := c.u.hs.Do(b, "PUT", path+fmt.Sprintf("%s%d", c.name, i), c.u.token, map[string]any{"msgtype": "m.text", "body": "hello"})
				if r.Status != http.StatusOK {
					b.Fatalf("send: %d %s", r.Status, r.Body)
				}
			}
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		})
	}
}
