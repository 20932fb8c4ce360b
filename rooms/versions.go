package rooms

// The room versions the server supports; creating rooms, the capabilities
// endpoint and federation's make_join all take them from here.

import "github.com/matrix-org/gomatrixserverlib"

// DefaultVersion is the room version of new rooms.
const DefaultVersion = gomatrixserverlib.RoomVersionV11

// SupportedVersions are the room versions Hearth serves, all stable. Version
// 12 needs state resolution v2.1, which gomatrixserverlib does not do
// correctly yet, so it (and the library's experimental versions) stay off
// until Hearth implements v2.1 itself.
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
