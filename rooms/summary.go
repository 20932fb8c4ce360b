package rooms

import (
	"context"
	"encoding/json"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// Info is what the room directory, room summaries and the space hierarchy
// say about a room (client-server API, PublishedRoomsChunk and
// RoomSummary), read from its current state.
type Info struct {
	RoomID           string   `json:"room_id"`
	Name             string   `json:"name,omitempty"`
	Topic            string   `json:"topic,omitempty"`
	CanonicalAlias   string   `json:"canonical_alias,omitempty"`
	AvatarURL        string   `json:"avatar_url,omitempty"`
	NumJoinedMembers int      `json:"num_joined_members"`
	WorldReadable    bool     `json:"world_readable"`
	GuestCanJoin     bool     `json:"guest_can_join"`
	JoinRule         string   `json:"join_rule,omitempty"`
	RoomType         string   `json:"room_type,omitempty"`
	RoomVersion      string   `json:"-"`
	Encryption       string   `json:"-"`
	AllowedRoomIDs   []string `json:"-"` // rooms whose members may join a restricted room
	Creator          string   `json:"-"`
}

// Info summarises a room's current state; storage.ErrNotFound for an
// unknown room.
func (r *Rooms) Info(ctx context.Context, roomID string) (Info, error) {
	if _, err := storage.GetRoom(ctx, r.db.Read(), roomID); err != nil {
		return Info{}, err // ErrNotFound for a room we do not have
	}
	info := Info{RoomID: roomID, JoinRule: "invite"}
	var wanted []storage.StateKey
	for _, t := range []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomTopic, spec.MRoomCanonicalAlias, "m.room.avatar",
		spec.MRoomHistoryVisibility, spec.MRoomGuestAccess, spec.MRoomJoinRules, "m.room.encryption"} {
		wanted = append(wanted, storage.StateKey{Type: t})
	}
	// Those keys only: a big room's whole state is tens of thousands.
	st, err := r.CurrentStateIDs(ctx, roomID, wanted...)
	if err != nil {
		return Info{}, err
	}
	ids := make([]string, 0, len(st))
	for _, id := range st {
		ids = append(ids, id)
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return Info{}, err
	}
	for _, ev := range evs {
		var c struct {
			Name        string `json:"name"`
			Topic       string `json:"topic"`
			Alias       string `json:"alias"`
			URL         string `json:"url"`
			HistoryVis  string `json:"history_visibility"`
			GuestAccess string `json:"guest_access"`
			JoinRule    string `json:"join_rule"`
			Type        string `json:"type"`
			RoomVersion string `json:"room_version"`
			Algorithm   string `json:"algorithm"`
			Allow       []struct {
				Type   string `json:"type"`
				RoomID string `json:"room_id"`
			} `json:"allow"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &c)
		switch ev.Type {
		case spec.MRoomCreate:
			info.RoomType, info.RoomVersion, info.Creator = c.Type, c.RoomVersion, ev.Sender
			if info.RoomVersion == "" {
				info.RoomVersion = "1"
			}
		case spec.MRoomName:
			info.Name = c.Name
		case spec.MRoomTopic:
			info.Topic = c.Topic
		case spec.MRoomCanonicalAlias:
			info.CanonicalAlias = c.Alias
		case "m.room.avatar":
			info.AvatarURL = c.URL
		case spec.MRoomHistoryVisibility:
			info.WorldReadable = c.HistoryVis == "world_readable"
		case spec.MRoomGuestAccess:
			info.GuestCanJoin = c.GuestAccess == "can_join"
		case spec.MRoomJoinRules:
			info.JoinRule = c.JoinRule
			for _, a := range c.Allow {
				if a.Type == "m.room_membership" && a.RoomID != "" {
					info.AllowedRoomIDs = append(info.AllowedRoomIDs, a.RoomID)
				}
			}
		case "m.room.encryption":
			info.Encryption = c.Algorithm
		}
	}
	if info.NumJoinedMembers, err = storage.JoinedMemberCount(ctx, r.db.Read(), roomID); err != nil {
		return Info{}, err
	}
	return info, nil
}
