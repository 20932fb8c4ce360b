package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"sort"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Spaces and room summaries, shared by the client API (hierarchy, room
// summary) and federation (hierarchy).

// SpaceChild is an m.space.child state event as the hierarchy shows it.
type SpaceChild struct {
	StrippedEvent
	OriginServerTS int64 `json:"origin_server_ts"`
	order          string
	Suggested      bool `json:"-"`
}

// Summary is a RoomSummary (client-server API, room summaries; the
// federation hierarchy shares it): the directory fields plus the ones v1.15
// added.
type Summary struct {
	Info
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	RoomVersion    string   `json:"room_version,omitempty"`
	Membership     string   `json:"membership,omitempty"`
}

// SummaryOf is the summary of a room's Info.
func SummaryOf(info Info) Summary {
	s := Summary{Info: info, Encryption: info.Encryption, RoomVersion: info.RoomVersion}
	if info.JoinRule == "restricted" || info.JoinRule == "knock_restricted" {
		s.AllowedRoomIDs = info.AllowedRoomIDs
		if s.AllowedRoomIDs == nil {
			s.AllowedRoomIDs = []string{}
		}
	}
	return s
}

// PubliclyPreviewable reports whether anyone may see a room's summary: a
// public or knockable join rule, or world_readable history.
func PubliclyPreviewable(info Info) bool {
	switch info.JoinRule {
	case spec.Public, spec.Knock, "knock_restricted":
		return true
	}
	return info.WorldReadable
}

// SpaceChildren returns a space's valid m.space.child events (content.via
// a non-empty list), in the spec's order: by content.order when valid,
// then origin_server_ts, then room ID.
func (r *Rooms) SpaceChildren(ctx context.Context, roomID string) ([]SpaceChild, error) {
	if _, err := storage.GetRoom(ctx, r.db.Read(), roomID); err != nil {
		return nil, err // ErrNotFound for a room we do not have
	}
	keep, err := r.CurrentStateOfType(ctx, roomID, "m.space.child")
	if err != nil {
		return nil, err
	}
	evs, err := r.StateEvents(ctx, keep)
	if err != nil {
		return nil, err
	}
	var out []SpaceChild
	for _, ev := range evs {
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.PDU.Content(), &c) != nil || len(c.Via) == 0 {
			continue
		}
		order, _ := c.Order.(string)
		if !validSpaceOrder(order) {
			order = ""
		}
		out = append(out, SpaceChild{StrippedEvent: Stripped(ev.PDU), OriginServerTS: ev.OriginTS, order: order, Suggested: c.Suggested})
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if (x.order != "") != (y.order != "") {
			return x.order != ""
		}
		if x.order != y.order {
			return x.order < y.order
		}
		if x.OriginServerTS != y.OriginServerTS {
			return x.OriginServerTS < y.OriginServerTS
		}
		return x.StateKey < y.StateKey
	})
	return out, nil
}

// validSpaceOrder: at most 50 characters in the range \x20 to \x7E.
func validSpaceOrder(s string) bool {
	if len(s) > 50 {
		return false
	}
	for _, ch := range []byte(s) {
		if ch < 0x20 || ch > 0x7e {
			return false
		}
	}
	return true
}

// HierarchyRoom is a room of a space hierarchy with its space children.
type HierarchyRoom struct {
	Summary
	ChildrenState []SpaceChild `json:"children_state"`
}

// ServerHierarchy answers GET /_matrix/federation/v1/hierarchy/{roomId}.
type ServerHierarchy struct {
	Room         HierarchyRoom `json:"room"`
	Children     []Summary     `json:"children"`
	Inaccessible []string      `json:"inaccessible_children"`
}

// ServerMayPreview reports whether another server may learn about a room
// through the hierarchy: a publicly previewable room, one it has a user
// joined to, or a restricted one when it has a user joined to an allowed
// room (as far as we know: we must be in that room to tell; the requesting
// server then checks allowed_room_ids for each of its users).
func (r *Rooms) ServerMayPreview(ctx context.Context, info Info, server spec.ServerName) (bool, error) {
	if PubliclyPreviewable(info) {
		return true, nil
	}
	if in, err := storage.ServerJoinedNow(ctx, r.db.Read(), info.RoomID, string(server)); err != nil || in {
		return in, err
	}
	if info.JoinRule == "restricted" || info.JoinRule == "knock_restricted" {
		for _, id := range info.AllowedRoomIDs {
			if in, err := storage.ServerJoinedNow(ctx, r.db.Read(), id, string(server)); err != nil || in {
				return in, err
			}
		}
	}
	return false, nil
}

// HierarchyForServer is one level of a space for another server: the room
// with its children, the children we know and server may see, and those it
// may not.
func (r *Rooms) HierarchyForServer(ctx context.Context, server spec.ServerName, roomID string, suggestedOnly bool) (*ServerHierarchy, error) {
	info, err := r.Info(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && info.RoomVersion == "" {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	if ok, err := r.ServerMayPreview(ctx, info, server); err != nil {
		return nil, err
	} else if !ok {
		return nil, mxhttp.NotFound("Room %s is not accessible", roomID)
	}
	out := &ServerHierarchy{Room: HierarchyRoom{Summary: SummaryOf(info), ChildrenState: []SpaceChild{}}, Children: []Summary{}, Inaccessible: []string{}}
	if info.RoomType != "m.space" {
		return out, nil
	}
	children, err := r.SpaceChildren(ctx, roomID)
	if err != nil {
		return nil, err
	}
	for _, ch := range children {
		if suggestedOnly && !ch.Suggested {
			continue
		}
		out.Room.ChildrenState = append(out.Room.ChildrenState, ch)
		ci, err := r.Info(ctx, ch.StateKey)
		if errors.Is(err, storage.ErrNotFound) || err == nil && ci.RoomVersion == "" {
			continue // not a room we are in: the requester asks its servers
		}
		if err != nil {
			return nil, err
		}
		if ok, err := r.ServerMayPreview(ctx, ci, server); err != nil {
			return nil, err
		} else if ok {
			out.Children = append(out.Children, SummaryOf(ci))
		} else {
			out.Inaccessible = append(out.Inaccessible, ch.StateKey)
		}
	}
	return out, nil
}
