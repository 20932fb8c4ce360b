package push

import (
	"context"
	"encoding/json"
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

// pusherFormat reads data.format of a pusher.
func pusherFormat(p storage.Pusher) string {
	var data struct {
		Format string `json:"format"`
	}
	_ = json.Unmarshal([]byte(p.Data), &data)
	return data.Format
}

// eventBody builds the notify request for one notification to one pusher.
func (p *Push) eventBody(_ context.Context, n notified, pusher storage.Pusher, unread int64) (string, error) {
	dev := device(pusher, n.res.Actions)
	prio := "low"
	if _, ok := dev.Tweaks["sound"]; ok || n.res.Highlight {
		prio = "high"
	}
	gn := gatewayNotification{EventID: n.n.EventID, RoomID: n.n.RoomID, Prio: prio,
		Counts: &gatewayCounts{Unread: unread}, Devices: []gatewayDevice{dev}}
	if pusherFormat(pusher) != "event_id_only" {
		ev := n.info.ev
		n.info.load()
		gn.Type, gn.Sender, gn.Content = ev.Type, ev.Sender, json.RawMessage(ev.PDU.Content())
		gn.SenderDisplayName, gn.RoomName, gn.RoomAlias = n.info.senderName, n.info.roomName, n.info.roomAlias
		gn.UserIsTarget = ev.StateKey != nil && *ev.StateKey == pusher.UserID
	}
	b, err := json.Marshal(map[string]any{"notification": gn})
	return string(b), err
}
