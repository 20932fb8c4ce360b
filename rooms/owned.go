package rooms

// Owned state (MSC3757, "Restricting who can overwrite a state event"):
// the unstable room versions org.matrix.msc3757.10 and .11, which are
// versions 10 and 11 with one auth rule changed. Rule 8 ("a state_key
// that starts with @ and does not match the sender: reject") becomes: a
// state key that starts with @ must begin with a valid user ID, ended by
// the end of the key or by the first _ after its first :, and the event is
// allowed when that user is the sender or has a lower power level than the
// sender. As Synapse (the MSC's implementation), a malformed leading user
// ID is refused as bad JSON, and only its server name is validated.
//
// How the versions are made: gomatrixserverlib keeps its room versions in
// a global map without a lock, so they are registered once, in init,
// before any goroutine can read the map (registering later, say when a
// server starts, would race with other servers' readers in the same
// process). Each is ownedVersion, the library's v10 or v11 under another
// name: events built and parsed through it are the library's v10 or v11
// events and report the base version from PDU.Version(). The room's
// version is therefore taken from its rooms row (and, for the auth rule,
// from its create event's content), never from an event.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// The MSC3757 room versions (unstable).
const (
	RoomVersionOwned10 gomatrixserverlib.RoomVersion = "org.matrix.msc3757.10"
	RoomVersionOwned11 gomatrixserverlib.RoomVersion = "org.matrix.msc3757.11"
)

// ownedBases maps each MSC3757 version to the version it changes.
var ownedBases = map[gomatrixserverlib.RoomVersion]gomatrixserverlib.RoomVersion{
	RoomVersionOwned10: gomatrixserverlib.RoomVersionV10,
	RoomVersionOwned11: gomatrixserverlib.RoomVersionV11,
}

func init() {
	for id, base := range ownedBases {
		gomatrixserverlib.SetRoomVersion(ownedVersion{IRoomVersion: gomatrixserverlib.MustGetRoomVersion(base), id: id})
	}
}

// ownedVersion is a base version under an MSC3757 name.
type ownedVersion struct {
	gomatrixserverlib.IRoomVersion
	id gomatrixserverlib.RoomVersion
}

func (v ownedVersion) Version() gomatrixserverlib.RoomVersion { return v.id }
func (v ownedVersion) Stable() bool                           { return false }

// BaseVersion returns the spec room version v is built on: v itself except
// for the MSC3757 versions. Code that switches on version strings uses it.
func BaseVersion(v gomatrixserverlib.RoomVersion) gomatrixserverlib.RoomVersion {
	if b, ok := ownedBases[v]; ok {
		return b
	}
	return v
}

// ownedState reports whether a room's create event makes it an MSC3757
// room. The create event, not PDU.Version(), says so (see above).
func ownedState(create gomatrixserverlib.PDU) bool {
	if create == nil {
		return false
	}
	var c struct {
		RoomVersion gomatrixserverlib.RoomVersion `json:"room_version"`
	}
	if json.Unmarshal(create.Content(), &c) != nil {
		return false
	}
	_, ok := ownedBases[c.RoomVersion]
	return ok
}

// errOwnedMalformed marks a state key that starts with @ but not with a
// valid user ID in an MSC3757 room: a client gets 400 M_BAD_JSON for it.
var errOwnedMalformed = errors.New("state key neither equals a valid user ID nor starts with one followed by _")

// allowed runs the room version's auth rules on pdu against the auth
// events in p: gomatrixserverlib's, with rule 8 replaced by MSC3757's in
// the rooms whose create event names an MSC3757 version. Every auth check
// of the room core (local sends, checks 4 to 6 on receipt, state
// resolution) goes through it.
func allowed(pdu gomatrixserverlib.PDU, p gomatrixserverlib.AuthEventProvider) error {
	key := pdu.StateKey()
	if key == nil || !strings.HasPrefix(*key, "@") || *key == string(pdu.SenderID()) || pdu.Type() == spec.MRoomMember {
		return gomatrixserverlib.Allowed(pdu, p, userIDForSender)
	}
	create, err := p.Create()
	if err != nil || !ownedState(create) {
		return gomatrixserverlib.Allowed(pdu, p, userIDForSender)
	}
	// Every rule but 8 as the library has them: it sees the sender's ID as
	// the state key, which its rule 8 lets through.
	if err := gomatrixserverlib.Allowed(ownerNeutral{pdu}, p, userIDForSender); err != nil {
		return err
	}
	owner, ok := stateKeyOwner(*key)
	if !ok {
		return fmt.Errorf("%w: %q", errOwnedMalformed, *key)
	}
	if owner == string(pdu.SenderID()) {
		return nil
	}
	senderLevel, err := powerLevel(p, create, pdu.SenderID())
	if err != nil {
		return err
	}
	ownerLevel, err := powerLevel(p, create, spec.SenderID(owner))
	if err != nil {
		return err
	}
	if senderLevel <= ownerLevel {
		return fmt.Errorf("sender %q (power level %d) may not modify the state belonging to %q (power level %d)",
			pdu.SenderID(), senderLevel, owner, ownerLevel)
	}
	return nil
}

// stateKeyOwner returns the user ID a state key starting with @ begins
// with: up to the first _ after the first : (or the whole key), when that
// is a user ID whose server name is valid.
func stateKeyOwner(key string) (string, bool) {
	colon := strings.IndexByte(key[1:], ':')
	if colon < 0 {
		return "", false
	}
	colon++
	owner := key
	if i := strings.IndexByte(key[colon+1:], '_'); i >= 0 {
		owner = key[:colon+1+i]
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(owner[colon+1:])); !ok {
		return "", false
	}
	return owner, true
}

// powerLevel is a user's power level in the auth events: from the power
// levels event, or without one 100 for the room's creator and 0 for
// everyone else (room versions 10 and 11 have no privileged creators).
func powerLevel(p gomatrixserverlib.AuthEventProvider, create gomatrixserverlib.PDU, user spec.SenderID) (int64, error) {
	pl, err := p.PowerLevels()
	if err != nil {
		return 0, err
	}
	if pl == nil {
		if user == create.SenderID() {
			return 100, nil
		}
		return 0, nil
	}
	c, err := gomatrixserverlib.NewPowerLevelContentFromEvent(pl)
	if err != nil {
		return 0, err
	}
	return c.UserLevel(user), nil
}

// ownerNeutral shows the library an owned-state event whose state key is
// its sender's ID, for the one call of Allowed that checks every other
// rule. The event's type, content and sender are unchanged.
type ownerNeutral struct{ gomatrixserverlib.PDU }

func (e ownerNeutral) StateKey() *string {
	s := string(e.PDU.SenderID())
	return &s
}
