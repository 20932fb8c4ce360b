package federation_test

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// keysOf lists "type|state_key" of each event.
func keysOf(evs gomatrixserverlib.EventJSONs) []string {
	var out []string
	for _, e := range evs {
		out = append(out, gjson.GetBytes(e, "type").Str+"|"+gjson.GetBytes(e, "state_key").Str)
	}
	slices.Sort(out)
	return out
}

// The resident side of a partial-state join (MSC3706): send_join with
// omit_members=true leaves out the member events but the heroes', leaves
// out of auth_chain what state holds, and names the servers in the room
// before the join; anything but true or false is M_INVALID_PARAM.
func TestSendJoinOmitMembers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bsrv := fed[0], fed[1]
		alice, bob := newFedUser(t, bsrv, "alice"), newFedUser(t, bsrv, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		// Six more members: heroes are five of them, by user ID.
		var others []string
		for _, n := range []string{"u1", "u2", "u3", "u4", "u5", "u6"} {
			u := newFedUser(t, bsrv, n)
			hearthtest.Expect(t, u.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
			others = append(others, u.id)
		}

		ctx := context.Background()
		client := a.Federation.Client()
		charlie := "@charlie:" + a.Config.ServerName
		mj, err := client.MakeJoin(ctx, serverName(a), serverName(bsrv), roomID, charlie)
		if err != nil {
			t.Fatal(err)
		}
		ver := gomatrixserverlib.MustGetRoomVersion(mj.RoomVersion)
		join, err := ver.NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			t.Fatal(err)
		}

		// A bad value is refused before anything is stored.
		path := "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID())
		hearthtest.Expect(t, signedPut(t, a, bsrv, path+"?omit_members=yes", join), http.StatusBadRequest, "M_INVALID_PARAM")

		res, err := client.SendJoinPartialState(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		if !res.MembersOmitted {
			t.Fatal("members_omitted is false")
		}
		all := append([]string{alice.id, bob.id}, others...)
		slices.Sort(all)
		want := []string{"m.room.create|", "m.room.history_visibility|", "m.room.join_rules|", "m.room.power_levels|"}
		for _, u := range all[:5] {
			want = append(want, "m.room.member|"+u)
		}
		slices.Sort(want)
		if got := keysOf(res.StateEvents); !slices.Equal(got, want) {
			t.Fatalf("state = %q, want %q", got, want)
		}
		// Everything the state and join need is in the state already.
		if got := keysOf(res.AuthEvents); len(got) != 0 {
			t.Fatalf("auth_chain = %q, want it empty", got)
		}
		if !slices.Equal(res.ServersInRoom, []string{bsrv.Config.ServerName}) {
			t.Fatalf("servers_in_room = %q, want only %s", res.ServersInRoom, bsrv.Config.ServerName)
		}

		// A named room has no heroes: only the joining user's own
		// membership (here: none) stays. The full answer still holds all.
		named := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Named"})
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(named), map[string]any{}), http.StatusOK, "")
		mj, err = client.MakeJoin(ctx, serverName(a), serverName(bsrv), named, charlie)
		if err != nil {
			t.Fatal(err)
		}
		join, err = ver.NewEventBuilderFromProtoEvent(&mj.JoinEvent).Build(time.Now(), serverName(a), a.Key.ID, a.Key.Private)
		if err != nil {
			t.Fatal(err)
		}
		res, err = client.SendJoinPartialState(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keysOf(res.StateEvents) {
			if strings.HasPrefix(k, "m.room.member|") {
				t.Fatalf("a named room's partial state holds %s", k)
			}
		}
		// The creator's join is the power levels' auth event: it comes in
		// the auth chain instead.
		if got := keysOf(res.AuthEvents); !slices.Equal(got, []string{"m.room.member|" + alice.id}) {
			t.Fatalf("auth_chain = %q, want alice's join", got)
		}
		full, err := client.SendJoin(ctx, serverName(a), serverName(bsrv), join)
		if err != nil {
			t.Fatal(err)
		}
		if full.MembersOmitted || !slices.Contains(keysOf(full.StateEvents), "m.room.member|"+bob.id) {
			t.Fatalf("the full answer: members_omitted %v, state %q", full.MembersOmitted, keysOf(full.StateEvents))
		}
	})
}
