// Package filter is the client-server API's Filter (Filtering, and the
// schemas under data/api/client-server/definitions/*_filter.yaml): the Go
// form of a filter as uploaded to POST /user/{userId}/filter or given inline
// to /sync, and its validation. Sync and /messages apply it.
//
// Absent and empty lists differ: a nil list is absent ("no restriction"),
// an empty non-nil list restricts to nothing.
package filter

import (
	"fmt"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// Filter is the top-level filter (the spec's Filter schema).
type Filter struct {
	EventFields []string     `json:"event_fields,omitempty"`
	EventFormat string       `json:"event_format,omitempty"` // "client" (default) or "federation"
	Presence    *EventFilter `json:"presence,omitempty"`
	AccountData *EventFilter `json:"account_data,omitempty"`
	Room        *RoomFilter  `json:"room,omitempty"`
}

// EventFilter is the spec's EventFilter.
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	Types      []string `json:"types,omitempty"`
}

// RoomEventFilter is the spec's RoomEventFilter: an EventFilter with room
// and lazy-loading options.
type RoomEventFilter struct {
	EventFilter
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	Rooms                     []string `json:"rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	// RelTypes and NotRelTypes filter on content.m.relates_to.rel_type
	// (MSC3874, unstable prefix as Synapse and Complement use it).
	RelTypes    []string `json:"org.matrix.msc3874.rel_types,omitempty"`
	NotRelTypes []string `json:"org.matrix.msc3874.not_rel_types,omitempty"`
}

// RoomFilter is the spec's RoomFilter.
type RoomFilter struct {
	NotRooms     []string         `json:"not_rooms,omitempty"`
	Rooms        []string         `json:"rooms,omitempty"`
	Ephemeral    *RoomEventFilter `json:"ephemeral,omitempty"`
	IncludeLeave bool             `json:"include_leave,omitempty"`
	State        *RoomEventFilter `json:"state,omitempty"`
	Timeline     *RoomEventFilter `json:"timeline,omitempty"`
	AccountData  *RoomEventFilter `json:"account_data,omitempty"`
}

// Parse decodes and validates a filter. Anything that does not fit the
// schema is 400 M_BAD_JSON (M_NOT_JSON when it is not JSON at all).
func Parse(body []byte) (Filter, error) {
	var f Filter
	if err := mxhttp.DecodeJSON(body, &f); err != nil {
		return f, err
	}
	if err := f.Validate(); err != nil {
		return f, mxhttp.BadJSON("Invalid filter: %v", err)
	}
	return f, nil
}

// Validate checks what the JSON types alone do not: enums, limits and ID
// shapes.
func (f Filter) Validate() error {
	switch f.EventFormat {
	case "", "client", "federation":
	default:
		return fmt.Errorf("event_format must be client or federation, not %q", f.EventFormat)
	}
	if err := f.Presence.validate("presence"); err != nil {
		return err
	}
	if err := f.AccountData.validate("account_data"); err != nil {
		return err
	}
	if r := f.Room; r != nil {
		if err := roomIDs("room.rooms", r.Rooms); err != nil {
			return err
		}
		if err := roomIDs("room.not_rooms", r.NotRooms); err != nil {
			return err
		}
		for name, ef := range map[string]*RoomEventFilter{"room.ephemeral": r.Ephemeral, "room.state": r.State,
			"room.timeline": r.Timeline, "room.account_data": r.AccountData} {
			if err := ef.validate(name); err != nil {
				return err
			}
		}
	}
	return nil
}

func (ef *EventFilter) validate(name string) error {
	if ef == nil {
		return nil
	}
	if ef.Limit != nil && *ef.Limit < 0 {
		return fmt.Errorf("%s.limit must not be negative", name)
	}
	if err := userIDs(name+".senders", ef.Senders); err != nil {
		return err
	}
	return userIDs(name+".not_senders", ef.NotSenders)
}

func (rf *RoomEventFilter) validate(name string) error {
	if rf == nil {
		return nil
	}
	if err := rf.EventFilter.validate(name); err != nil {
		return err
	}
	if err := roomIDs(name+".rooms", rf.Rooms); err != nil {
		return err
	}
	return roomIDs(name+".not_rooms", rf.NotRooms)
}

func roomIDs(name string, ids []string) error {
	for _, id := range ids {
		if !strings.HasPrefix(id, "!") {
			return fmt.Errorf("%s: %q is not a room ID", name, id)
		}
	}
	return nil
}

func userIDs(name string, ids []string) error {
	for _, id := range ids {
		if !strings.HasPrefix(id, "@") {
			return fmt.Errorf("%s: %q is not a user ID", name, id)
		}
	}
	return nil
}
