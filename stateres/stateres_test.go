package stateres

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// dag builds signed events of one room with explicit prev and auth events
// and controlled timestamps.
type dag struct {
	t      *testing.T
	ver    gomatrixserverlib.IRoomVersion
	roomID string
	events map[string]gomatrixserverlib.PDU
	key    ed25519.PrivateKey
	ts     int64
}

func newDAG(t *testing.T, v gomatrixserverlib.RoomVersion) *dag {
	_, key, _ := ed25519.GenerateKey(nil)
	return &dag{t: t, ver: gomatrixserverlib.MustGetRoomVersion(v), events: map[string]gomatrixserverlib.PDU{}, key: key, ts: 1_700_000_000_000}
}

const (
	alice   = "@alice:a.test"
	bob     = "@bob:a.test"
	charlie = "@charlie:b.test"
	eve     = "@eve:b.test"
	zara    = "@zara:a.test"
)

// add builds an event; auth lists its auth events (without the create
// event in v12 rooms, which the room ID stands for).
func (d *dag) add(sender, typ, stateKey string, content any, prev, auth []string) gomatrixserverlib.PDU {
	d.t.Helper()
	d.ts++
	return d.addAt(d.ts, sender, typ, stateKey, content, prev, auth)
}

func (d *dag) addAt(ts int64, sender, typ, stateKey string, content any, prev, auth []string) gomatrixserverlib.PDU {
	d.t.Helper()
	b, _ := json.Marshal(content)
	sk := stateKey
	roomID := d.roomID
	if typ == spec.MRoomCreate && d.ver.DomainlessRoomIDs() {
		roomID = ""
	} else if d.roomID == "" {
		d.roomID = "!room:a.test"
		roomID = d.roomID
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: sender, RoomID: roomID, Type: typ, StateKey: &sk, Content: b,
		PrevEvents: append([]string{}, prev...), AuthEvents: append([]string{}, auth...),
		Depth: int64(len(d.events) + 1), Version: d.ver,
	}
	origin := spec.ServerName("a.test")
	pdu, err := d.ver.NewEventBuilderFromProtoEvent(proto).Build(time.UnixMilli(ts), origin, "ed25519:1", d.key)
	if err != nil {
		d.t.Fatalf("building %s: %v", typ, err)
	}
	pdu.EventID()
	if typ == spec.MRoomCreate && d.ver.DomainlessRoomIDs() {
		d.roomID = "!" + pdu.EventID()[1:]
	}
	d.events[pdu.EventID()] = pdu
	return pdu
}

// withCreate adds the create event to auth events in pre-v12 rooms.
func (d *dag) withCreate(create string, auth ...string) []string {
	if d.ver.DomainlessRoomIDs() {
		return auth
	}
	return append([]string{create}, auth...)
}

func (d *dag) resolve(sets ...StateMap) StateMap {
	d.t.Helper()
	out, err := Resolve(Input{
		Algorithm: d.ver.StateResAlgorithm(),
		StateSets: sets,
		Event: func(id string) (gomatrixserverlib.PDU, bool) {
			ev, ok := d.events[id]
			return ev, ok
		},
		UserIDForSender: func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
			return spec.NewUserID(string(s), true)
		},
	})
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// libraryResolve runs gomatrixserverlib's v2 resolution on the same sets.
func (d *dag) libraryResolve(sets ...StateMap) StateMap {
	d.t.Helper()
	seen := map[string]bool{}
	var evs []gomatrixserverlib.PDU
	for _, s := range sets {
		for _, id := range s {
			if !seen[id] {
				seen[id] = true
				evs = append(evs, d.events[id])
			}
		}
	}
	var all []gomatrixserverlib.PDU
	for _, ev := range d.events {
		all = append(all, ev)
	}
	res, err := gomatrixserverlib.ResolveConflicts(d.ver.Version(), evs, all, func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
		return spec.NewUserID(string(s), true)
	}, func(string) bool { return false })
	if err != nil {
		d.t.Fatal(err)
	}
	out := StateMap{}
	for _, ev := range res {
		out[Key{ev.Type(), *ev.StateKey()}] = ev.EventID()
	}
	return out
}

func stateOf(evs ...gomatrixserverlib.PDU) StateMap {
	s := StateMap{}
	for _, ev := range evs {
		s[Key{ev.Type(), *ev.StateKey()}] = ev.EventID()
	}
	return s
}

func member(m string) map[string]any { return map[string]any{"membership": m} }

// room is the start of a public room made by alice: create, alice's join,
// power levels (with users), join rules public.
type room struct {
	create, aliceJoin, pl, jr gomatrixserverlib.PDU
}

func (d *dag) newRoom(users map[string]int64) room {
	var r room
	r.create = d.add(alice, spec.MRoomCreate, "", map[string]any{"room_version": d.ver.Version()}, nil, nil)
	c := r.create.EventID()
	r.aliceJoin = d.add(alice, spec.MRoomMember, alice, member("join"), []string{c}, d.withCreate(c))
	r.pl = d.add(alice, spec.MRoomPowerLevels, "", map[string]any{"users": users}, []string{r.aliceJoin.EventID()}, d.withCreate(c, r.aliceJoin.EventID()))
	r.jr = d.add(alice, spec.MRoomJoinRules, "", map[string]string{"join_rule": "public"}, []string{r.pl.EventID()}, d.withCreate(c, r.aliceJoin.EventID(), r.pl.EventID()))
	return r
}

func (d *dag) join(r room, user, prev string, pl gomatrixserverlib.PDU) gomatrixserverlib.PDU {
	c := r.create.EventID()
	return d.add(user, spec.MRoomMember, user, member("join"), []string{prev}, d.withCreate(c, pl.EventID(), r.jr.EventID()))
}

func expect(t *testing.T, got StateMap, k Key, want gomatrixserverlib.PDU, what string) {
	t.Helper()
	if want == nil {
		if id, ok := got[k]; ok {
			t.Errorf("%s: %v is %s, want absent", what, k, id)
		}
		return
	}
	if got[k] != want.EventID() {
		t.Errorf("%s: %v is %q, want %s (%s)", what, k, got[k], want.EventID(), want.Content())
	}
}

var (
	plKey = Key{spec.MRoomPowerLevels, ""}
	jrKey = Key{spec.MRoomJoinRules, ""}
)

// The fork that made gomatrixserverlib's ResolveConflictsNew panic: two
// power levels events on two branches from the same parent.
func TestTwoBranchPowerLevelFork(t *testing.T) {
	for _, v := range []gomatrixserverlib.RoomVersion{"11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			d := newDAG(t, v)
			users := map[string]int64{}
			if v != "12" {
				users[alice] = 100
			}
			r := d.newRoom(users)
			c := r.create.EventID()
			bobJoin := d.join(r, bob, r.jr.EventID(), r.pl)
			base := append(d.withCreate(c, r.aliceJoin.EventID()), r.pl.EventID())
			usersA := map[string]int64{bob: 50}
			usersB := map[string]int64{bob: 75}
			if v != "12" {
				usersA[alice], usersB[alice] = 100, 100
			}
			plA := d.add(alice, spec.MRoomPowerLevels, "", map[string]any{"users": usersA}, []string{bobJoin.EventID()}, base)
			plB := d.add(alice, spec.MRoomPowerLevels, "", map[string]any{"users": usersB}, []string{bobJoin.EventID()}, base)
			common := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.jr, bobJoin}
			setA := stateOf(append(common, plA)...)
			setB := stateOf(append(common, plB)...)
			got := d.resolve(setA, setB)
			// Same sender and power: the later timestamp is applied last.
			expect(t, got, plKey, plB, "power levels")
			for _, ev := range common {
				expect(t, got, Key{ev.Type(), *ev.StateKey()}, ev, "unconflicted")
			}
			if got2 := d.resolve(setB, setA); !equal(got, got2) {
				t.Errorf("resolution depends on the order of the state sets")
			}
			if v != "12" {
				if lib := d.libraryResolve(setA, setB); !equal(got, lib) {
					t.Errorf("differs from gomatrixserverlib: %v vs %v", got, lib)
				}
			}
		})
	}
}

// A higher-powered sender's power event sorts first, so a lower-powered
// concurrent change that is still allowed is applied after it and wins;
// a change the lower-powered user may not make is dropped.
func TestPowerOrderingAndAuth(t *testing.T) {
	for _, v := range []gomatrixserverlib.RoomVersion{"11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			d := newDAG(t, v)
			users := map[string]int64{bob: 9493420}
			if v != "12" {
				users = map[string]int64{alice: 100, bob: 50}
			}
			r := d.newRoom(users)
			c := r.create.EventID()
			bobJoin := d.join(r, bob, r.jr.EventID(), r.pl)
			auth := func(u gomatrixserverlib.PDU) []string {
				return append(d.withCreate(c, u.EventID()), r.pl.EventID())
			}
			// Alice sets invite later in time than bob's knock: in v12
			// alice (creator) sorts first so bob's knock is applied last.
			bobJR := d.add(bob, spec.MRoomJoinRules, "", map[string]string{"join_rule": "knock"}, []string{bobJoin.EventID()}, auth(bobJoin))
			aliceJR := d.add(alice, spec.MRoomJoinRules, "", map[string]string{"join_rule": "invite"}, []string{bobJoin.EventID()}, auth(r.aliceJoin))
			common := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, bobJoin}
			got := d.resolve(stateOf(append(common, aliceJR)...), stateOf(append(common, bobJR)...))
			if v == "12" {
				expect(t, got, jrKey, bobJR, "join rules")
			} else {
				// bob (50) reaches state_default (50); alice (100) sorts
				// first, so bob's is applied last.
				expect(t, got, jrKey, bobJR, "join rules")
				if lib := d.libraryResolve(stateOf(append(common, aliceJR)...), stateOf(append(common, bobJR)...)); !equal(got, lib) {
					t.Errorf("differs from gomatrixserverlib: %v vs %v", got, lib)
				}
			}
		})
	}
}

// MSC4297 problem A (Complement: StateResolutionV2_1_starts_from_empty_set):
// alice makes the room invite-only and leaves; a server claims the join
// rule is still public. The unconflicted state has alice left, so v2
// rejects both join rules (alice is not in the room) and the room ends up
// with none; v2.1 checks them from the empty state against their own auth
// events and keeps "invite".
func TestStartsFromEmptySet(t *testing.T) {
	for _, v := range []gomatrixserverlib.RoomVersion{"11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			d := newDAG(t, v)
			users := map[string]int64{}
			if v != "12" {
				users[alice] = 100
			}
			r := d.newRoom(users)
			c := r.create.EventID()
			bobJoin := d.join(r, bob, r.jr.EventID(), r.pl)
			charlieJoin := d.join(r, charlie, bobJoin.EventID(), r.pl)
			jrInvite := d.add(alice, spec.MRoomJoinRules, "", map[string]string{"join_rule": "invite"}, []string{charlieJoin.EventID()}, append(d.withCreate(c, r.aliceJoin.EventID()), r.pl.EventID()))
			aliceLeave := d.add(alice, spec.MRoomMember, alice, member("leave"), []string{jrInvite.EventID()}, append(d.withCreate(c, r.aliceJoin.EventID()), r.pl.EventID()))
			charlieName := d.add(charlie, spec.MRoomMember, charlie, map[string]any{"membership": "join", "displayname": "C"}, []string{aliceLeave.EventID()}, append(d.withCreate(c, charlieJoin.EventID()), r.pl.EventID(), jrInvite.EventID()))
			good := stateOf(r.create, r.pl, bobJoin, jrInvite, aliceLeave, charlieName)
			bad := stateOf(r.create, r.pl, bobJoin, r.jr, aliceLeave, charlieJoin)
			got := d.resolve(good, bad)
			if v == "12" {
				expect(t, got, jrKey, jrInvite, "join rules")
			} else {
				expect(t, got, jrKey, nil, "join rules (v2 drops both)")
				if lib := d.libraryResolve(good, bad); !equal(got, lib) {
					t.Errorf("differs from gomatrixserverlib: %v vs %v", got, lib)
				}
			}
			expect(t, got, Key{spec.MRoomMember, alice}, aliceLeave, "alice")
			expect(t, got, Key{spec.MRoomMember, charlie}, charlieName, "charlie")
		})
	}
}

// MSC4297 problem B (Complement: StateResolutionV2_1_includes_conflicted_subgraph):
// PL1 (alice 100) -> PL2 by alice (bob 50) -> PL3 by bob (charlie 50). A
// server claims PL1 is current. The conflicted set is {PL1, PL3}; PL2 is
// in both auth chains so not in the auth difference. v2 replays PL3
// against PL1 where bob has no power and keeps PL1; v2.1 includes PL2 (on
// the path PL3 -> PL2 -> PL1) and ends at PL3.
func TestIncludesConflictedSubgraph(t *testing.T) {
	for _, v := range []gomatrixserverlib.RoomVersion{"11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			d := newDAG(t, v)
			creatorUsers := map[string]int64{}
			if v != "12" {
				creatorUsers[alice] = 100
			}
			r := d.newRoom(creatorUsers)
			c := r.create.EventID()
			// In this test "alice" is the creator and zara plays the MSC's
			// alice with PL 100.
			pl1Users := map[string]int64{zara: 100}
			if v != "12" {
				pl1Users[alice] = 100
			}
			pl1 := d.add(alice, spec.MRoomPowerLevels, "", map[string]any{"users": pl1Users}, []string{r.jr.EventID()}, append(d.withCreate(c, r.aliceJoin.EventID()), r.pl.EventID()))
			zaraJoin := d.join(r, zara, pl1.EventID(), pl1)
			bobJoin := d.join(r, bob, zaraJoin.EventID(), pl1)
			charlieJoin := d.join(r, charlie, bobJoin.EventID(), pl1)
			pl2Users := map[string]int64{zara: 100, bob: 50}
			if v != "12" {
				pl2Users[alice] = 100
			}
			pl2 := d.add(zara, spec.MRoomPowerLevels, "", map[string]any{"users": pl2Users}, []string{charlieJoin.EventID()}, append(d.withCreate(c, zaraJoin.EventID()), pl1.EventID()))
			pl3Users := map[string]int64{zara: 100, bob: 50, charlie: 50}
			if v != "12" {
				pl3Users[alice] = 100
			}
			pl3 := d.add(bob, spec.MRoomPowerLevels, "", map[string]any{"users": pl3Users}, []string{pl2.EventID()}, append(d.withCreate(c, bobJoin.EventID()), pl2.EventID()))
			eveJoin := d.join(r, eve, pl3.EventID(), pl3)
			eveName := d.add(eve, spec.MRoomMember, eve, map[string]any{"membership": "join", "displayname": "E"}, []string{eveJoin.EventID()}, append(d.withCreate(c, eveJoin.EventID()), pl3.EventID(), r.jr.EventID()))
			common := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.jr, zaraJoin, bobJoin, charlieJoin}
			good := stateOf(append(common, pl3, eveName)...)
			bad := stateOf(append(common, pl1, eveJoin)...)
			got := d.resolve(good, bad)
			if v == "12" {
				expect(t, got, plKey, pl3, "power levels")
			} else {
				expect(t, got, plKey, pl1, "power levels (v2 resets)")
				if lib := d.libraryResolve(good, bad); !equal(got, lib) {
					t.Errorf("differs from gomatrixserverlib: %v vs %v", got, lib)
				}
			}
			expect(t, got, Key{spec.MRoomMember, eve}, eveName, "eve")
		})
	}
}

// Kicks are power events: a kick by a moderator and the target's
// concurrent name change resolve to the kick.
func TestKickBeatsConcurrentChange(t *testing.T) {
	for _, v := range []gomatrixserverlib.RoomVersion{"11", "12"} {
		t.Run("v"+string(v), func(t *testing.T) {
			d := newDAG(t, v)
			users := map[string]int64{}
			if v != "12" {
				users[alice] = 100
			}
			r := d.newRoom(users)
			c := r.create.EventID()
			bobJoin := d.join(r, bob, r.jr.EventID(), r.pl)
			kick := d.add(alice, spec.MRoomMember, bob, member("leave"), []string{bobJoin.EventID()}, append(d.withCreate(c, r.aliceJoin.EventID(), bobJoin.EventID()), r.pl.EventID()))
			rename := d.add(bob, spec.MRoomMember, bob, map[string]any{"membership": "join", "displayname": "B"}, []string{bobJoin.EventID()}, append(d.withCreate(c, bobJoin.EventID()), r.pl.EventID(), r.jr.EventID()))
			common := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr}
			a, b := stateOf(append(common, kick)...), stateOf(append(common, rename)...)
			got := d.resolve(a, b)
			// The kick (a power event) is applied first; the rename is a
			// self-join in a public room, allowed after the kick too.
			expect(t, got, Key{spec.MRoomMember, bob}, rename, "bob")
			if v != "12" {
				if lib := d.libraryResolve(a, b); !equal(got, lib) {
					t.Errorf("differs from gomatrixserverlib: %v vs %v", got, lib)
				}
			}
		})
	}
}

// A key present in only one state set is conflicted (not unconflicted):
// a ban in one branch and nothing for the user in the other resolves to
// the ban when it is allowed.
func TestKeyMissingFromOneSet(t *testing.T) {
	d := newDAG(t, "12")
	r := d.newRoom(map[string]int64{})
	c := r.create.EventID()
	ban := d.add(alice, spec.MRoomMember, eve, member("ban"), []string{r.jr.EventID()}, append(d.withCreate(c, r.aliceJoin.EventID()), r.pl.EventID()))
	common := []gomatrixserverlib.PDU{r.create, r.aliceJoin, r.pl, r.jr}
	got := d.resolve(stateOf(append(common, ban)...), stateOf(common...))
	expect(t, got, Key{spec.MRoomMember, eve}, ban, "eve")
	// A forged power levels event by a non-member is dropped.
	forged := d.add(eve, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]int64{eve: 100}}, []string{r.jr.EventID()}, append(d.withCreate(c), r.pl.EventID()))
	got = d.resolve(stateOf(r.create, r.aliceJoin, forged, r.jr), stateOf(common...))
	expect(t, got, plKey, r.pl, "power levels")
}

func TestSingleSetAndErrors(t *testing.T) {
	d := newDAG(t, "12")
	r := d.newRoom(map[string]int64{})
	s := stateOf(r.create, r.aliceJoin, r.pl, r.jr)
	if got := d.resolve(s); !equal(got, s) {
		t.Errorf("one state set must resolve to itself")
	}
	if _, err := Resolve(Input{Algorithm: gomatrixserverlib.StateResV1, StateSets: []StateMap{s}}); err == nil {
		t.Errorf("v1 must be refused")
	}
}

func equal(a, b StateMap) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
