// Package rooms is the room core. So far it holds the room versions the
// server supports; creating rooms, the capabilities endpoint and
// federation's make_join all take them from here.
package rooms

import "github.com/matrix-org/gomatrixserverlib"

// DefaultVersion is the room version of new rooms.
const DefaultVersion = gomatrixserverlib.RoomVersionV11

// SupportedVersions are the room versions Hearth serves, all stable. Version
// 12 (and gomatrixserverlib's experimental versions) are left out until the
// room core implements what they change.
var SupportedVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
	gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
	gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
	gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11,
}

// IsSupported reports whether v is one of SupportedVersions.
func IsSupported(v string) bool {
	for _, s := range SupportedVersions {
		if string(s) == v {
			return true
		}
	}
	return false
}
