package rooms

// The room versions the server supports; creating rooms, the capabilities
// endpoint and federation's make_join all take them from here.

import "github.com/matrix-org/gomatrixserverlib"

// DefaultVersion is the room version of new rooms.
const DefaultVersion = gomatrixserverlib.RoomVersionV11

// SupportedVersions are the stable room versions Hearth serves. Version 12
// resolves state with Hearth's own v2.1 (package stateres), as
// gomatrixserverlib's is unfinished. The library's unstable versions (and
// org.matrix.msc4242.12, which it marks stable by mistake) stay off.
var SupportedVersions = []gomatrixserverlib.RoomVersion{
	gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2, gomatrixserverlib.RoomVersionV3,
	gomatrixserverlib.RoomVersionV4, gomatrixserverlib.RoomVersionV5, gomatrixserverlib.RoomVersionV6,
	gomatrixserverlib.RoomVersionV7, gomatrixserverlib.RoomVersionV8, gomatrixserverlib.RoomVersionV9,
	gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV11, gomatrixserverlib.RoomVersionV12,
}

// UnstableVersions are the unstable room versions Hearth serves (Hearth's
// own, see owned.go); capabilities calls them unstable.
var UnstableVersions = []gomatrixserverlib.RoomVersion{RoomVersionOwned10, RoomVersionOwned11}

// KnownVersions are SupportedVersions and UnstableVersions: what we tell
// other servers we can join.
func KnownVersions() []gomatrixserverlib.RoomVersion {
	return append(append([]gomatrixserverlib.RoomVersion{}, SupportedVersions...), UnstableVersions...)
}

// IsSupported reports whether v is one of KnownVersions.
func IsSupported(v string) bool {
	for _, s := range KnownVersions() {
		if string(s) == v {
			return true
		}
	}
	return false
}
