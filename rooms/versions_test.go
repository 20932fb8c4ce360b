package rooms

import (
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

// Every version we advertise must be one gomatrixserverlib implements and
// calls stable, and the default must be among them.
func TestSupportedVersionsAreStableInGomatrixserverlib(t *testing.T) {
	known := gomatrixserverlib.RoomVersions()
	for _, v := range SupportedVersions {
		impl, ok := known[v]
		if !ok {
			t.Errorf("room version %s is unknown to gomatrixserverlib", v)
			continue
		}
		if !impl.Stable() {
			t.Errorf("room version %s is not stable in gomatrixserverlib", v)
		}
	}
	if !IsSupported(string(DefaultVersion)) {
		t.Errorf("default room version %s is not supported", DefaultVersion)
	}
	if !IsSupported("12") {
		t.Error("room version 12 must be supported")
	}
	if IsSupported("org.matrix.msc4242.12") || IsSupported(string(gomatrixserverlib.RoomVersionHydra)) {
		t.Error("unstable room versions must not be advertised")
	}
}
