package rooms

import (
	"encoding/json"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// ClientEvent is an event in the client-server API's format (ClientEvent,
// or ClientEventWithoutRoomID in sync).
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       map[string]any  `json:"unsigned,omitempty"`
}

// Viewer says who an event is formatted for: the sending device gets its
// transaction_id back.
type Viewer struct {
	UserID   string
	DeviceID string
}

// ClientEvent formats ev for viewer. redactedBecause, when the event is
// redacted and the redaction is known, is included in unsigned.
func (ev *Event) ClientEvent(viewer Viewer, redactedBecause *Event) ClientEvent {
	ce := ClientEvent{
		Content:        json.RawMessage(ev.PDU.Content()),
		EventID:        ev.EventID,
		OriginServerTS: ev.OriginTS,
		RoomID:         ev.RoomID,
		Sender:         ev.Sender,
		StateKey:       ev.StateKey,
		Type:           ev.Type,
		Unsigned:       map[string]any{},
	}
	if len(ce.Content) == 0 {
		ce.Content = json.RawMessage("{}")
	}
	if ev.Type == spec.MRoomRedaction {
		ce.Redacts = ev.PDU.Redacts()
	}
	age := time.Now().UnixMilli() - ev.OriginTS
	if age < 0 {
		age = 0
	}
	ce.Unsigned["age"] = age
	if ev.TxnID != nil && ev.SenderDevice != nil && viewer.UserID == ev.Sender && viewer.DeviceID == *ev.SenderDevice {
		ce.Unsigned["transaction_id"] = *ev.TxnID
	}
	if ev.PrevContent != nil {
		ce.Unsigned["prev_content"] = json.RawMessage(*ev.PrevContent)
		ce.Unsigned["prev_sender"] = *ev.PrevSender
		ce.Unsigned["replaces_state"] = *ev.ReplacesState
	}
	if ev.RedactedBy != nil && redactedBecause != nil {
		ce.Unsigned["redacted_because"] = redactedBecause.ClientEvent(viewer, nil)
	}
	return ce
}

// ClientEvents formats events in order.
func ClientEvents(evs []*Event, viewer Viewer) []ClientEvent {
	out := make([]ClientEvent, 0, len(evs))
	for _, ev := range evs {
		out = append(out, ev.ClientEvent(viewer, nil))
	}
	return out
}

// StrippedEvent is the stripped state given with invites (client-server
// API, Stripped state).
type StrippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// Stripped returns the stripped form of a state event.
func Stripped(pdu gomatrixserverlib.PDU) StrippedEvent {
	return StrippedEvent{Content: pdu.Content(), Sender: string(pdu.SenderID()), StateKey: *pdu.StateKey(), Type: pdu.Type()}
}

// StrippedJSON is a state event as invite_state and knock_state show it:
// the stripped form, except that a room version 12 room's m.room.create is
// given in full, as its PDU (MSC4311: the client can check the room ID
// against it).
func StrippedJSON(pdu gomatrixserverlib.PDU) json.RawMessage {
	if fullCreate(pdu) {
		return json.RawMessage(pdu.JSON())
	}
	b, _ := json.Marshal(Stripped(pdu))
	return b
}

// fullCreate reports whether pdu is a create event that stripped state
// carries whole: one whose ID names its room (domainless room IDs).
func fullCreate(pdu gomatrixserverlib.PDU) bool {
	if pdu.Type() != spec.MRoomCreate || !pdu.StateKeyEquals("") {
		return false
	}
	v, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	return err == nil && v.DomainlessRoomIDs()
}
