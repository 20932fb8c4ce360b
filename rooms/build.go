package rooms

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// A cheaper build of the commonest local event, a message-like event
// (not state, not a redaction, of a type whose content redaction empties):
// the canonical JSON is written once, the content hash, signature and
// reference hash (event ID) are computed over it directly, and the result
// is parsed once. EventBuilder.Build marshals, re-parses and re-sorts the
// event five times and the event ID costs a sixth pass. The output is the
// same bytes as Build's (TestFastBuildMatchesLibrary compares them for
// every supported room version); anything else goes through Build.

// redactionKeepsContent are the event types whose content keeps keys on
// redaction in some room version (the spec's redaction algorithm).
var redactionKeepsContent = map[string]bool{
	spec.MRoomMember: true, spec.MRoomCreate: true, spec.MRoomJoinRules: true,
	spec.MRoomPowerLevels: true, spec.MRoomHistoryVisibility: true, "m.room.aliases": true,
	spec.MRoomRedaction: true,
}

// fastVersion says how a room version's events are built here, found once
// per version by redacting a sample event with the library: whether
// redaction keeps the top-level origin key (versions before 11).
type fastVersion struct {
	ok          bool
	keepsOrigin bool
}

var fastVersions sync.Map // gomatrixserverlib.RoomVersion -> fastVersion

func fastVersionOf(ver gomatrixserverlib.IRoomVersion) fastVersion {
	if v, ok := fastVersions.Load(ver.Version()); ok {
		return v.(fastVersion)
	}
	fv := probeFastVersion(ver)
	fastVersions.Store(ver.Version(), fv)
	return fv
}

func probeFastVersion(ver gomatrixserverlib.IRoomVersion) fastVersion {
	if ver.EventFormat() != gomatrixserverlib.EventFormatV2 || ver.StateDAGs() {
		return fastVersion{}
	}
	switch ver.EventIDFormat() {
	case gomatrixserverlib.EventIDFormatV2, gomatrixserverlib.EventIDFormatV3:
	default:
		return fastVersion{}
	}
	f := fastFields{auth: `[]`, content: `{"body":"x"}`, depth: "1", hashes: `{"sha256":"x"}`, origin: `"o"`,
		ts: "1", prev: `[]`, room: `"!r:o"`, sender: `"@s:o"`, typ: `"m.room.message"`}
	red, err := ver.RedactEventJSON([]byte(f.object(true, false)))
	if err != nil {
		return fastVersion{}
	}
	red = gomatrixserverlib.CanonicalJSONAssumeValid(red)
	for _, keep := range []bool{true, false} {
		if string(red) == f.redacted(keep) {
			return fastVersion{ok: true, keepsOrigin: keep}
		}
	}
	return fastVersion{}
}

// fastFields are the canonical JSON values of an event's keys.
type fastFields struct {
	auth, content, depth, hashes, origin, ts, prev, room, sender, signatures, typ string
}

// object is the event as canonical JSON (keys in code point order), with
// hashes and signatures when asked.
func (f *fastFields) object(hashes, signatures bool) string {
	b := make([]byte, 0, 256+len(f.content))
	b = append(b, `{"auth_events":`...)
	b = append(b, f.auth...)
	b = append(b, `,"content":`...)
	b = append(b, f.content...)
	b = append(b, `,"depth":`...)
	b = append(b, f.depth...)
	if hashes {
		b = append(b, `,"hashes":`...)
		b = append(b, f.hashes...)
	}
	b = append(b, `,"origin":`...)
	b = append(b, f.origin...)
	b = f.tail(b, signatures)
	return string(b)
}

// redacted is the event's redacted form without signatures: what is
// signed and what the reference hash covers.
func (f *fastFields) redacted(keepOrigin bool) string {
	b := make([]byte, 0, 256)
	b = append(b, `{"auth_events":`...)
	b = append(b, f.auth...)
	b = append(b, `,"content":{},"depth":`...)
	b = append(b, f.depth...)
	b = append(b, `,"hashes":`...)
	b = append(b, f.hashes...)
	if keepOrigin {
		b = append(b, `,"origin":`...)
		b = append(b, f.origin...)
	}
	b = f.tail(b, false)
	return string(b)
}

func (f *fastFields) tail(b []byte, signatures bool) []byte {
	b = append(b, `,"origin_server_ts":`...)
	b = append(b, f.ts...)
	b = append(b, `,"prev_events":`...)
	b = append(b, f.prev...)
	b = append(b, `,"room_id":`...)
	b = append(b, f.room...)
	b = append(b, `,"sender":`...)
	b = append(b, f.sender...)
	if signatures {
		b = append(b, `,"signatures":`...)
		b = append(b, f.signatures...)
	}
	b = append(b, `,"type":`...)
	b = append(b, f.typ...)
	return append(b, '}')
}

// canonical is v as canonical JSON.
func canonical(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(gomatrixserverlib.CanonicalJSONAssumeValid(b)), nil
}

// fastBuild builds proto as Build would, or returns nil when the event is
// not one it handles (the caller then uses Build, which also reports
// invalid content).
func (r *Rooms) fastBuild(ver gomatrixserverlib.IRoomVersion, proto *gomatrixserverlib.EventBuilder, ts time.Time) (gomatrixserverlib.PDU, error) {
	authIDs, _ := proto.AuthEvents.([]string)
	if authIDs == nil || proto.StateKey != nil || proto.Redacts != "" || redactionKeepsContent[proto.Type] || proto.Unsigned != nil || proto.Signature != nil {
		return nil, nil
	}
	fv := fastVersionOf(ver)
	if !fv.ok {
		return nil, nil
	}
	content, err := gomatrixserverlib.EnforcedCanonicalJSON(proto.Content, ver.Version())
	if err != nil || len(content) == 0 || content[0] != '{' {
		return nil, nil
	}
	prev, _ := proto.PrevEvents.([]string)
	if prev == nil {
		return nil, nil
	}
	f := fastFields{content: string(content), depth: strconv.FormatInt(proto.Depth, 10),
		ts: strconv.FormatInt(int64(spec.AsTimestamp(ts)), 10)}
	for _, s := range []struct {
		dst *string
		v   any
	}{{&f.auth, authIDs}, {&f.origin, r.serverName}, {&f.prev, prev}, {&f.room, proto.RoomID}, {&f.sender, proto.SenderID}, {&f.typ, proto.Type}} {
		if *s.dst, err = canonical(s.v); err != nil {
			return nil, nil
		}
	}
	contentHash := sha256.Sum256([]byte(f.object(false, false)))
	f.hashes = `{"sha256":"` + base64.RawStdEncoding.EncodeToString(contentHash[:]) + `"}`
	redacted := []byte(f.redacted(fv.keepsOrigin))
	sig := ed25519.Sign(r.key.Private, redacted)
	if f.signatures, err = canonical(map[string]map[string]string{
		string(r.serverName): {string(r.key.ID): base64.RawStdEncoding.EncodeToString(sig)},
	}); err != nil {
		return nil, nil
	}
	ref := sha256.Sum256(redacted)
	enc := base64.RawURLEncoding
	if ver.EventIDFormat() == gomatrixserverlib.EventIDFormatV2 {
		enc = base64.RawStdEncoding
	}
	pdu, err := ver.NewEventFromTrustedJSONWithEventID("$"+enc.EncodeToString(ref[:]), []byte(f.object(true, true)), false)
	if err != nil {
		return nil, nil
	}
	if err := gomatrixserverlib.CheckFields(pdu); err != nil {
		return nil, err
	}
	return pdu, nil
}
