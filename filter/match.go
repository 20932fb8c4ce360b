package filter

import (
	"encoding/json"
	"slices"
	"strings"
)

// matchType applies the spec's wildcard rule: a trailing * matches any rest
// of the type.
func matchType(pattern, s string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(s, p)
	}
	return pattern == s
}

// Allows reports whether an event of this type and sender passes the
// filter. not_* lists win over the allow lists; an absent list allows all.
func (f *EventFilter) Allows(eventType, sender string) bool {
	if f == nil {
		return true
	}
	for _, t := range f.NotTypes {
		if matchType(t, eventType) {
			return false
		}
	}
	if f.Types != nil {
		ok := false
		for _, t := range f.Types {
			ok = ok || matchType(t, eventType)
		}
		if !ok {
			return false
		}
	}
	for _, s := range f.NotSenders {
		if s == sender {
			return false
		}
	}
	if f.Senders != nil {
		for _, s := range f.Senders {
			if s == sender {
				return true
			}
		}
		return false
	}
	return true
}

// AllowsType reports whether some event of this type can pass the filter
// (from some sender): false lets a caller skip reading them at all.
func (f *EventFilter) AllowsType(eventType string) bool {
	if f == nil {
		return true
	}
	for _, t := range f.NotTypes {
		if matchType(t, eventType) {
			return false
		}
	}
	if f.Types != nil && !slices.ContainsFunc(f.Types, func(t string) bool { return matchType(t, eventType) }) {
		return false
	}
	return f.Senders == nil || len(f.Senders) > 0
}

// AllowsType is EventFilter.AllowsType for a room event filter (nil allows
// all).
func (f *RoomEventFilter) AllowsType(eventType string) bool {
	if f == nil {
		return true
	}
	return f.EventFilter.AllowsType(eventType)
}

// AllowsEvent applies a room event filter to an event's type, sender and
// content (contains_url and MSC3874's rel_types / not_rel_types).
func (f *RoomEventFilter) AllowsEvent(eventType, sender string, content []byte) bool {
	if f == nil {
		return true
	}
	if !f.EventFilter.Allows(eventType, sender) {
		return false
	}
	if f.ContainsURL == nil && f.RelTypes == nil && f.NotRelTypes == nil {
		return true
	}
	var c struct {
		URL       *string `json:"url"`
		RelatesTo struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(content, &c)
	if f.ContainsURL != nil && (c.URL != nil) != *f.ContainsURL {
		return false
	}
	rel := c.RelatesTo.RelType
	if rel != "" && slices.Contains(f.NotRelTypes, rel) {
		return false
	}
	// An event without a relation never matches a rel_types allow list.
	if f.RelTypes != nil && (rel == "" || !slices.Contains(f.RelTypes, rel)) {
		return false
	}
	return true
}

// AllowsRoom applies rooms/not_rooms.
func AllowsRoom(rooms, notRooms []string, roomID string) bool {
	for _, r := range notRooms {
		if r == roomID {
			return false
		}
	}
	if rooms == nil {
		return true
	}
	for _, r := range rooms {
		if r == roomID {
			return true
		}
	}
	return false
}

// LimitOr returns the filter's limit or def.
func (f *RoomEventFilter) LimitOr(def int) int {
	if f == nil || f.Limit == nil {
		return def
	}
	return *f.Limit
}
