package push

import (
	"encoding/json"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The request body of POST /_matrix/push/v1/notify (Push Gateway API).

type gatewayNotification struct {
	EventID           string          `json:"event_id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	Prio              string          `json:"prio,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	Counts            *gatewayCounts  `json:"counts,omitempty"`
	Devices           []gatewayDevice `json:"devices"`
}

type gatewayCounts struct {
	Unread int64 `json:"unread"`
}

type gatewayDevice struct {
	AppID     string         `json:"app_id"`
	PushKey   string         `json:"pushkey"`
	PushKeyTS int64          `json:"pushkey_ts,omitempty"`
	Data      map[string]any `json:"data,omitempty"`
	Tweaks    map[string]any `json:"tweaks,omitempty"`
}

// device is a pusher as the gateway sees it: its data without url (the
// spec: forward everything else, format included).
func device(p storage.Pusher, actions []pushrules.Action) gatewayDevice {
	d := gatewayDevice{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.PushKeyTS}
	var data map[string]any
	_ = json.Unmarshal([]byte(p.Data), &data)
	delete(data, "url")
	if len(data) > 0 {
		d.Data = data
	}
	for _, a := range actions {
		if a.Name != "set_tweak" {
			continue
		}
		if d.Tweaks == nil {
			d.Tweaks = map[string]any{}
		}
		var v any = true
		if a.Value != nil {
			_ = json.Unmarshal(a.Value, &v)
		}
		d.Tweaks[a.Tweak] = v
	}
	return d
}

// eventInfo is what a push says about an event beyond its own fields,
// loaded once per event for all its recipients.
type eventInfo struct {
	ev   *rooms.Event
	rc   *roomCtx
	once sync.Once

	senderName, roomName, roomAlias string
}

func (i *eventInfo) load() {
	i.once.Do(func() {
		i.senderName = i.rc.displayName(i.ev.Sender)
		i.roomName, _ = i.rc.stateContent(spec.MRoomName, "")["name"].(string)
		i.roomAlias, _ = i.rc.stateContent(spec.MRoomCanonicalAlias, "")["alias"].(string)
	})
}

// eventBody builds the notification of one event for one user's pushers;
// the devices are added per pusher when it is sent (requestBody).
func eventBody(n notified, unread int64) (string, error) {
	ev := n.info.ev
	n.info.load()
	prio := "low"
	for _, a := range n.res.Actions {
		if a.Name == "set_tweak" && a.Tweak == "sound" {
			prio = "high"
		}
	}
	if n.res.Highlight {
		prio = "high"
	}
	gn := gatewayNotification{EventID: n.n.EventID, RoomID: n.n.RoomID, Prio: prio, Counts: &gatewayCounts{Unread: unread},
		Type: ev.Type, Sender: ev.Sender, Content: json.RawMessage(ev.PDU.Content()),
		SenderDisplayName: n.info.senderName, RoomName: n.info.roomName, RoomAlias: n.info.roomAlias,
		UserIsTarget: ev.StateKey != nil && *ev.StateKey == n.n.UserID}
	b, err := json.Marshal(gn)
	return string(b), err
}

// requestBody is the notify request of a queued push to one pusher: the
// pusher as the only device, and only event_id, room_id, counts and prio
// of the event when the pusher's format is event_id_only.
func requestBody(pusher storage.Pusher, qp storage.QueuedPush) ([]byte, error) {
	var gn gatewayNotification
	if err := json.Unmarshal([]byte(qp.Body), &gn); err != nil {
		return nil, fmt.Errorf("queued push %d: %w", qp.ID, err)
	}
	var actions []pushrules.Action
	_ = json.Unmarshal([]byte(qp.Actions), &actions)
	var data struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal([]byte(pusher.Data), &data)
	if data.Format == "event_id_only" {
		gn = gatewayNotification{EventID: gn.EventID, RoomID: gn.RoomID, Prio: gn.Prio, Counts: gn.Counts}
	}
	gn.Devices = []gatewayDevice{device(pusher, actions)}
	return json.Marshal(map[string]any{"notification": gn})
}
