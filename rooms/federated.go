package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ErrNotImplemented marks federation paths of the room core still being built.
var ErrNotImplemented = errors.New("not implemented yet")

// ReceivePDU handles one PDU a remote server sent (server-server API,
// Checks performed on receipt of a PDU): parse for the room's version,
// check signatures and hashes, authorise against its auth events, the state
// before it and the current state (soft-fail), fetching missing prev events,
// then persist it through the room's sequencer. The error is the PDU's
// result in the transaction response; nil means accepted.
func (r *Rooms) ReceivePDU(ctx context.Context, origin spec.ServerName, roomID string, raw json.RawMessage) error {
	return ErrNotImplemented
}
