package rooms

// The room versions the server supports; creating rooms, the capabilities
// endpoint and federation's make_join all take them from here.

import "github.com/matrix-org/gomatrixserverlib"

// DefaultVersion is the room version of new rooms.
const DefaultVersion = gomatrixserverlib.RoomVersionV11

// SupportedVersions are the room versions Hearth serves, all stable.
// Version 12 resolves state with Hearth's own v2.1 (package stateres), as
// gomatrixserverlib's is unfinished. The library's unstable versions (and
// org.matrix.msc4242.12, which it marks stable by mistake) stay off.
var SupportedVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
	gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
	gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
	gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12,
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
