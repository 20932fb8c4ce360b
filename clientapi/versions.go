package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
)

// specVersions are the client-server API versions Hearth advertises. A
// version is listed when the features it requires are implemented:
// registration tokens (v1.2), refresh tokens (v1.3), threads and private
// read receipts (v1.4), asynchronous uploads and login tokens (v1.7),
// relations recursion and room summaries' building blocks (v1.10),
// authenticated media (v1.11), account locking (v1.12), account
// suspension and application-service ephemeral data (v1.13), user reports
// (v1.14), room summaries of rooms the server is not in (v1.15),
// invite_room_state validation (v1.16), application-service devices
// (v1.17), policy servers, admin lock and suspend endpoints and
// M_USER_LIMIT_EXCEEDED (v1.18), mutual rooms (v1.19); the OAuth 2.0 API
// is served too, though the spec lets a server offer either
// authentication API (v1.15+). Known gaps: third-party identifiers
// beyond email (3PID), and SSO login, so no support for "OAuth 2.0 aware
// clients" (v1.18), whose server rules apply only to a server that
// provides it. docs/spec-coverage.md has the audit.
var specVersions = []string{"v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19"}

// unstableFeatures are the MSC flags Hearth implements, each checked
// against its code and tests (docs/spec-coverage.md).
var unstableFeatures = map[string]bool{
	"org.matrix.msc3391": true, // deleting account data (account_data.go, TestAccountDataDeletion)
	"org.matrix.msc3814": true, // dehydrated devices (dehydrated_device.go, TestDehydratedDevice)
	"io.element.msc4388": true, // QR sign-in rendezvous (oauth/rendezvous.go, TestRendezvous)
	// simplified sliding sync, MSC4186 (sliding_sync.go)
	"org.matrix.simplified_msc3575": true,
	// thread subscriptions, MSC4306 and its sliding sync extension MSC4308
	// (thread_subscriptions.go, TestThreadSubscriptions)
	"org.matrix.msc4306": true,
}

// GET /_matrix/client/versions (client-server API, API Standards).
// Delayed events (MSC4140) are advertised when configured on.
func (a *API) versions(r *http.Request, _ accounts.Caller) (any, error) {
	features := make(map[string]bool, len(unstableFeatures)+2)
	for k, v := range unstableFeatures {
		features[k] = v
	}
	if a.delayed.Enabled() {
		features["org.matrix.msc4140"] = true // delayed_events.go
	}
	if len(a.rtcTransports()) > 0 {
		features["org.matrix.msc4143"] = true // rtc.go
	}
	return map[string]any{
		"versions":          specVersions,
		"unstable_features": features,
	}, nil
}
