package rooms

import (
	"context"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/stateres"
	"github.com/hearth-matrix/hearth/storage"
)

// redactionTakesEffect reports whether a redaction may be applied to its
// target. Since room version 3 the auth rules accept every redaction and
// leave this check to the server (room version 3, Handling redactions):
// it applies when the redaction's sender is of the target sender's server,
// or has the room's redact power level in the state the redaction was
// authorised against (its auth events; in version 12 rooms, whose events
// do not cite the create event, with the create event named by the room
// ID). A redaction that does not take effect stays in the timeline and
// redacts nothing.
func (r *Rooms) redactionTakesEffect(ctx context.Context, q storage.Reader, roomID string, red gomatrixserverlib.PDU, target *Event, pending map[string]*Event) (bool, error) {
	sender := string(red.SenderID())
	if serverOf(sender) == serverOf(target.Sender) {
		return true, nil
	}
	ver, err := gomatrixserverlib.GetRoomVersion(red.Version())
	if err != nil {
		return false, err
	}
	ids := red.AuthEventIDs()
	if ver.DomainlessRoomIDs() {
		ids = append(slices.Clone(ids), "$"+strings.TrimPrefix(roomID, "!"))
	}
	auth, err := r.authEventsFor(ctx, q, ids, pending)
	if err != nil {
		return false, err
	}
	create, _ := auth.Create()
	if create == nil {
		return false, nil
	}
	if ver.PrivilegedCreators() && slices.Contains(stateres.Creators(create), sender) {
		return true, nil
	}
	creator := string(create.SenderID())
	if c := gjson.GetBytes(create.Content(), "creator"); c.Type == gjson.String && ver.CreatorInCreateEvent() {
		creator = c.Str
	}
	pl, err := gomatrixserverlib.NewPowerLevelContentFromAuthEvents(auth, creator)
	if err != nil {
		return false, nil // unreadable power levels grant nothing
	}
	return pl.UserLevel(spec.SenderID(sender)) >= pl.Redact, nil
}

// serverOf is the server name of a user ID.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
