package rooms

// Policy Servers (spec v1.18: client-server API, Policy Servers;
// server-server API, Policy Servers, and check 7 of the checks on receipt
// of a PDU). A room whose current state has a valid m.room.policy naming
// a server with a joined member "uses" that policy server: every event but
// the m.room.policy state event with an empty state key carries its
// signature, under the key in m.room.policy with the key ID
// ed25519:policy_server. This server asks for it before sending (and
// refuses the client's request when the policy server refuses or cannot
// be reached), soft-fails received events that still lack a valid one
// after asking, and can itself be a policy server (PolicyServer).

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// MRoomPolicy is the state event naming a room's policy server.
const MRoomPolicy = "m.room.policy"

// PolicyKeyID is the key ID of every policy server signature ("The Key ID
// for the ed25519 key in m.room.policy is always ed25519:policy_server").
const PolicyKeyID gomatrixserverlib.KeyID = "ed25519:policy_server"

// PolicyClient asks a remote policy server to sign an event (POST
// /_matrix/policy/v1/sign) and returns the signatures it answered with
// ({server: {key ID: signature}}); an error answer carries its HTTP status
// (HTTPStatus) and body (Body). Federation implements it.
type PolicyClient interface {
	PolicySign(ctx context.Context, server spec.ServerName, pdu gomatrixserverlib.PDU) (map[string]map[string]string, error)
}

// PolicyServer is this server acting as a policy server: Key is its
// policy key (never the server's signing key, as the spec advises), and
// an event is refused when one of its content's strings contains one of
// RefusedWords, compared case-insensitively.
type PolicyServer struct {
	Key          ed25519.PrivateKey
	RefusedWords []string
}

// PublicKey is the policy key as m.room.policy and
// /.well-known/matrix/policy_server carry it: unpadded base64.
func (p *PolicyServer) PublicKey() string {
	return base64.RawStdEncoding.EncodeToString(p.Key.Public().(ed25519.PublicKey))
}

// check is the policy decision: nil to sign, else the refusal (400
// M_FORBIDDEN, the /sign endpoint's "refuses to sign the event").
func (p *PolicyServer) check(pdu gomatrixserverlib.PDU) error {
	if len(p.RefusedWords) == 0 {
		return nil
	}
	var refused string
	var walk func(v gjson.Result)
	walk = func(v gjson.Result) {
		switch {
		case refused != "":
		case v.Type == gjson.String:
			s := strings.ToLower(v.Str)
			for _, w := range p.RefusedWords {
				if w != "" && strings.Contains(s, strings.ToLower(w)) {
					refused = w
					return
				}
			}
		case v.IsObject() || v.IsArray():
			v.ForEach(func(_, e gjson.Result) bool { walk(e); return refused == "" })
		}
	}
	walk(gjson.ParseBytes(pdu.Content()))
	if refused != "" {
		return mxhttp.Forbidden("The event contains a word this room's policy server refuses").WithStatus(400)
	}
	return nil
}

// signature is this policy server's signature of an event, as /sign
// returns it: over the redacted event, like every event signature.
func (p *PolicyServer) signature(serverName spec.ServerName, pdu gomatrixserverlib.PDU) (map[string]map[string]string, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return nil, err
	}
	redacted, err := ver.RedactEventJSON(pdu.JSON())
	if err != nil {
		return nil, err
	}
	signed, err := gomatrixserverlib.SignJSON(string(serverName), PolicyKeyID, p.Key, redacted)
	if err != nil {
		return nil, err
	}
	sig := gjson.GetBytes(signed, "signatures."+gjson.Escape(string(serverName))+"."+gjson.Escape(string(PolicyKeyID))).Str
	return map[string]map[string]string{string(serverName): {string(PolicyKeyID): sig}}, nil
}

// SetPolicyClient plugs in the client that asks remote policy servers.
func (r *Rooms) SetPolicyClient(c PolicyClient) { r.policyClient = c }

// SetPolicyServer makes this server a policy server (nil: not one).
func (r *Rooms) SetPolicyServer(p *PolicyServer) { r.policyServer = p }

// PolicyPublicKey is this server's policy key, or "" when it is not a
// policy server.
func (r *Rooms) PolicyPublicKey() string {
	if r.policyServer == nil {
		return ""
	}
	return r.policyServer.PublicKey()
}

// roomPolicy is the policy server a room uses.
type roomPolicy struct {
	via spec.ServerName
	// key is the ed25519 public key of m.room.policy; nil when it does
	// not decode to one, so that no signature is valid.
	key ed25519.PublicKey
}

var policyStateKey = storage.StateKey{Type: MRoomPolicy}

// policyExempt reports whether an event is the one kind the policy server
// is never asked about: m.room.policy with an empty state key.
func policyExempt(pdu gomatrixserverlib.PDU) bool {
	return pdu.Type() == MRoomPolicy && pdu.StateKey() != nil && *pdu.StateKey() == ""
}

// policyOf reads a room's policy server from the m.room.policy event
// eventID of its current state ("Determining if a Policy Server is
// enabled in a room"): nil when the content is not valid (a string via,
// an object public_keys with a string ed25519) or via has no joined
// member in the current state (q's view of current_state).
func (r *Rooms) policyOf(ctx context.Context, q storage.Reader, roomID, eventID string, pending map[string]*Event) (*roomPolicy, error) {
	ev, ok := pending[eventID]
	if !ok {
		evs, err := r.Events(ctx, q, []string{eventID})
		if err != nil {
			return nil, err
		}
		if ev = evs[eventID]; ev == nil {
			return nil, nil
		}
	}
	c := gjson.ParseBytes(ev.PDU.Content())
	via, key := c.Get("via"), c.Get("public_keys.ed25519")
	if via.Type != gjson.String || !c.Get("public_keys").IsObject() || key.Type != gjson.String {
		return nil, nil
	}
	joined, err := storage.ServerJoinedNow(ctx, q, roomID, via.Str)
	if err != nil || !joined {
		return nil, err
	}
	p := &roomPolicy{via: spec.ServerName(via.Str)}
	if b, err := decodeKey(key.Str); err == nil && len(b) == ed25519.PublicKeySize {
		p.key = ed25519.PublicKey(b)
	}
	return p, nil
}

// decodeKey reads unpadded base64; the spec's own example of a policy key
// is in the URL-safe alphabet, so that is read too.
func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// currentPolicy is the policy server a room uses now, or nil.
func (r *Rooms) currentPolicy(ctx context.Context, roomID string) (*roomPolicy, error) {
	q := r.db.Read()
	id, err := storage.CurrentStateEventID(ctx, q, roomID, MRoomPolicy, "")
	if err != nil || id == "" {
		return nil, err
	}
	return r.policyOf(ctx, q, roomID, id, nil)
}

// signedBy reports whether pdu carries a valid signature of the policy
// server under the key of m.room.policy ("Validating Policy Server
// signatures").
func (p *roomPolicy) signedBy(pdu gomatrixserverlib.PDU) bool {
	if p.key == nil {
		return false
	}
	ver, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return false
	}
	redacted, err := ver.RedactEventJSON(pdu.JSON())
	if err != nil {
		return false
	}
	return gomatrixserverlib.VerifyJSON(string(p.via), PolicyKeyID, p.key, redacted) == nil
}

// withSignatures returns pdu with the policy server's signatures added to
// those it has (the policy server may return only its own).
func withSignatures(pdu gomatrixserverlib.PDU, via spec.ServerName, sigs map[string]map[string]string) (gomatrixserverlib.PDU, error) {
	mine := sigs[string(via)]
	if len(mine) == 0 {
		return nil, errors.New("the answer has no signature of the policy server")
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(pdu.JSON(), &ev); err != nil {
		return nil, err
	}
	all := map[string]map[string]string{}
	if raw, ok := ev["signatures"]; ok {
		if err := json.Unmarshal(raw, &all); err != nil {
			return nil, err
		}
	}
	if all[string(via)] == nil {
		all[string(via)] = map[string]string{}
	}
	for k, v := range mine {
		all[string(via)][k] = v
	}
	raw, err := json.Marshal(all)
	if err != nil {
		return nil, err
	}
	ev["signatures"] = raw
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	ver, err := gomatrixserverlib.GetRoomVersion(pdu.Version())
	if err != nil {
		return nil, err
	}
	out, err := ver.NewEventFromTrustedJSON(b, false)
	if err != nil {
		return nil, err
	}
	if out.EventID() != pdu.EventID() {
		return nil, fmt.Errorf("adding a signature changed the event ID")
	}
	return out, nil
}

// askPolicyServer gets the room's policy server's signature on pdu
// (received: an event from another server) and returns pdu with it, after
// checking it ("After asking for a signature, homeservers SHOULD validate
// the returned signature"). The error is the one for the client: the
// policy server's own error, verbatim, when it answered with one; else
// that it could not be reached or signed wrongly.
func (r *Rooms) askPolicyServer(ctx context.Context, p *roomPolicy, pdu gomatrixserverlib.PDU, received bool) (gomatrixserverlib.PDU, error) {
	var sigs map[string]map[string]string
	if p.via == r.serverName {
		if r.policyServer == nil {
			return nil, mxhttp.Forbidden("This server is the room's policy server but is not configured as one (policy_server)")
		}
		if err := r.policyServer.check(pdu); err != nil {
			return nil, err
		}
		var err error
		if sigs, err = r.policyServer.signature(r.serverName, pdu); err != nil {
			return nil, err
		}
	} else {
		if r.policyClient == nil {
			return nil, errors.New("federation is not configured")
		}
		if until, ok := r.policyDown.Load(p.via); ok && received && time.Now().Before(until.(time.Time)) {
			// Every received event of the room (and of a gap being
			// filled) would wait for it in turn: fail at once for a while.
			// A local send always asks: its user is waiting for it.
			return nil, &mxhttp.Error{Status: 502, ErrCode: "M_UNKNOWN",
				Message: fmt.Sprintf("The room's policy server %s could not be reached a moment ago", p.via)}
		}
		var err error
		if sigs, err = r.policyClient.PolicySign(ctx, p.via, pdu); err != nil {
			refusal := policyRefusal(p.via, err)
			if refusal.Status >= 500 {
				r.policyDown.Store(p.via, time.Now().Add(policyDownFor))
			}
			return nil, refusal
		}
		r.policyDown.Delete(p.via)
	}
	signed, err := withSignatures(pdu, p.via, sigs)
	if err != nil || !p.signedBy(signed) {
		r.log.Warn("the policy server's signature is not valid", "server", p.via, "event", pdu.EventID(), "err", err)
		return nil, &mxhttp.Error{Status: 502, ErrCode: "M_UNKNOWN",
			Message: fmt.Sprintf("The room's policy server %s did not sign the event with the key in m.room.policy", p.via)}
	}
	return signed, nil
}

// policyRefusal is the client's error for a policy server that did not
// sign: its own Matrix error verbatim ("If the Policy Server returned an
// error, that error SHOULD be provided to the client verbatim"), else 502
// (it could not be reached, or answered something that is not a Matrix
// error).
func policyRefusal(via spec.ServerName, err error) *mxhttp.Error {
	var he interface {
		HTTPStatus() int
		Body() []byte
	}
	if errors.As(err, &he) && he.HTTPStatus() >= 400 && he.HTTPStatus() < 500 {
		code, msg := gjson.GetBytes(he.Body(), "errcode"), gjson.GetBytes(he.Body(), "error")
		if code.Type == gjson.String && strings.HasPrefix(code.Str, "M_") {
			e := &mxhttp.Error{Status: he.HTTPStatus(), ErrCode: code.Str, Message: msg.String()}
			if ra := gjson.GetBytes(he.Body(), "retry_after_ms"); ra.Type == gjson.Number {
				e = e.With("retry_after_ms", ra.Int())
			}
			return e
		}
	}
	return &mxhttp.Error{Status: 502, ErrCode: "M_UNKNOWN",
		Message: fmt.Sprintf("The room's policy server %s could not be asked to sign the event: %v", via, err)}
}

// sendWithPolicyServer is Send for rooms that use a remote policy server,
// called with the room locked and batch taken: it returns false, doing
// nothing, for every other room. Each request of the batch is built in a
// transaction that is rolled back (so the events are exactly those that
// will be committed, built on the room's head), the policy server is
// asked to sign them with no transaction open (the network must not hold
// the database's writer), and the request is then committed with the
// signed events, the room staying locked throughout so its head does not
// move. A refusal fails the request with the policy server's error.
func (r *Rooms) sendWithPolicyServer(ctx context.Context, roomID string, batch []*sendRequest, unlock func()) bool {
	if _, ok := r.policyRooms.Load(roomID); !ok {
		// No m.room.policy seen here: the transaction's check finds one
		// this process missed (errPolicyUnsigned), and Send comes back.
		return false
	}
	p, err := r.remotePolicy(ctx, roomID)
	if err != nil || p == nil {
		// A local policy server signs in the transaction; an error here
		// is met again there.
		return false
	}
	for i, req := range batch {
		u := func() {}
		if i == len(batch)-1 {
			u = unlock
		}
		if req.err = r.signBeforeSend(ctx, roomID, p, req); req.err != nil {
			u()
			close(req.done)
			continue
		}
		r.sendBatch(ctx, roomID, []*sendRequest{req}, u)
	}
	return true
}

// policyDownFor is how long a policy server that could not be reached is
// not asked again.
const policyDownFor = 10 * time.Second

// errDryRun rolls back the transaction that builds events to be signed.
var errDryRun = errors.New("dry run")

// dryRunKey marks the context of that transaction: its events are not
// checked for the signature they are being built to get.
type dryRunKey struct{}

// dryRun runs fn, which builds and persists local events, in a
// transaction that is rolled back, and returns the events of roomID it
// wrote, in order.
func (r *Rooms) dryRun(ctx context.Context, roomID string, fn func(ctx context.Context, tx *sql.Tx) ([]*Event, error)) ([]gomatrixserverlib.PDU, error) {
	var pdus []gomatrixserverlib.PDU
	ctx = context.WithValue(ctx, dryRunKey{}, true)
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		evs, err := fn(ctx, tx)
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.RoomID == roomID {
				pdus = append(pdus, ev.PDU)
			}
		}
		return errDryRun
	})
	if !errors.Is(err, errDryRun) {
		return nil, err
	}
	return pdus, nil
}

// signProtos has the events a dry run built for protos signed by the room's
// policy server and returns protos with them as built; protos unchanged
// when the dry run built none (a retried transaction).
func (r *Rooms) signProtos(ctx context.Context, p *roomPolicy, protos []Proto, pdus []gomatrixserverlib.PDU) ([]Proto, error) {
	if len(pdus) != len(protos) {
		return protos, nil
	}
	out := slices.Clone(protos)
	for i, pdu := range pdus {
		if !policyExempt(pdu) {
			var err error
			if pdu, err = r.askPolicyServer(ctx, p, pdu, false); err != nil {
				return nil, err
			}
		}
		out[i].built = pdu
	}
	return out, nil
}

// remotePolicy is the room's policy server when it is another server.
func (r *Rooms) remotePolicy(ctx context.Context, roomID string) (*roomPolicy, error) {
	p, err := r.currentPolicy(ctx, roomID)
	if err != nil || p == nil || p.via == r.serverName {
		return nil, err
	}
	return p, nil
}

// signBeforeSend builds req's events and has each signed by the policy
// server, leaving them in req.protos as built.
func (r *Rooms) signBeforeSend(ctx context.Context, roomID string, p *roomPolicy, req *sendRequest) error {
	pdus, err := r.dryRun(ctx, roomID, func(ctx context.Context, tx *sql.Tx) ([]*Event, error) {
		room, err := r.db.LockRoom(ctx, tx, roomID)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("Unknown room %s", roomID)
		}
		if err != nil {
			return nil, err
		}
		b, err := r.newRoomWrite(ctx, tx, &room)
		if err != nil {
			return nil, err
		}
		if _, err := r.sendOne(ctx, tx, b, req.protos, true); err != nil {
			return nil, err
		}
		return b.appended, nil
	})
	if err != nil {
		return err
	}
	req.protos, err = r.signProtos(ctx, p, req.protos, pdus)
	return err
}

// policySignature is the check of a local event before it is persisted,
// in its transaction: in a room using a policy server, the event must
// carry that server's valid signature. This server signs as the room's
// policy server itself; a remote one has signed already
// (sendWithPolicyServer), else the send fails.
func (r *Rooms) policySignature(ctx context.Context, tx *sql.Tx, b *roomWrite, pdu gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	id, ok := b.cur.state[policyStateKey]
	if !ok || ctx.Value(dryRunKey{}) != nil || policyExempt(pdu) {
		return pdu, nil
	}
	p, err := r.policyOf(ctx, tx, b.room.RoomID, id, b.pending)
	if err != nil || p == nil {
		return pdu, err
	}
	if p.via != r.serverName {
		head := b.room.Extremities
		if len(head) > maxPrevEvents {
			head = head[len(head)-maxPrevEvents:]
		}
		if !p.signedBy(pdu) || !slices.Equal(pdu.PrevEventIDs(), head) {
			// Unsigned, or signed on a head another process has moved
			// since: Send builds and asks again.
			return nil, errPolicyUnsigned
		}
		return pdu, nil
	}
	if p.signedBy(pdu) {
		return pdu, nil
	}
	return r.askPolicyServer(ctx, p, pdu, false)
}

// errPolicyUnsigned fails a local event that needs a remote policy
// server's signature it has not got: Send asks for it and tries again.
var errPolicyUnsigned = mxhttp.Internal("The event was not signed by the room's policy server")

// notePolicyRooms remembers the rooms of committed m.room.policy events
// (local or received), so that their sends ask the policy server first.
func (r *Rooms) notePolicyRooms(evs []*Event) {
	for _, ev := range evs {
		if ev.Type == MRoomPolicy {
			r.policyRooms.Store(ev.RoomID, true)
		}
	}
}

// policySignOutgoing has a local event that is sent before it is
// persisted (an invite, which the invitee's server signs first) signed by
// the room's policy server, when the room uses one.
func (r *Rooms) policySignOutgoing(ctx context.Context, pdu gomatrixserverlib.PDU) (gomatrixserverlib.PDU, error) {
	if policyExempt(pdu) {
		return pdu, nil
	}
	p, err := r.currentPolicy(ctx, pdu.RoomID().String())
	if err != nil || p == nil || p.signedBy(pdu) {
		return pdu, err
	}
	return r.askPolicyServer(ctx, p, pdu, false)
}

// policyCheckReceived is check 7 of the checks on receipt of a PDU: in a
// room using a policy server (by the current state), an event without
// its valid signature is sent to it for one; ok is false when it still
// has none, and the event is then soft-failed. The event returned carries
// the signature obtained, which is stored with it so that it passes on
// to servers that fetch the event from us.
func (r *Rooms) policyCheckReceived(ctx context.Context, pdu gomatrixserverlib.PDU) (_ gomatrixserverlib.PDU, ok bool) {
	if policyExempt(pdu) {
		return pdu, true
	}
	p, err := r.currentPolicy(ctx, pdu.RoomID().String())
	if err != nil {
		r.log.Warn("reading the room's policy server", "room", pdu.RoomID().String(), "err", err)
		return pdu, true
	}
	if p == nil || p.signedBy(pdu) {
		return pdu, true
	}
	signed, err := r.askPolicyServer(ctx, p, pdu, true)
	if err != nil {
		r.log.Info("soft-failing an event the room's policy server did not sign", "event", pdu.EventID(), "server", p.via, "err", err)
		return pdu, false
	}
	return signed, true
}

// PolicySign answers POST /_matrix/policy/v1/sign as this server's policy
// server: the event of raw, in a room where this server has a joined
// member, is signed unless the policy refuses it.
func (r *Rooms) PolicySign(ctx context.Context, raw json.RawMessage) (map[string]map[string]string, error) {
	if r.policyServer == nil {
		return nil, mxhttp.Unrecognized("This server is not a policy server")
	}
	roomID := gjson.GetBytes(raw, "room_id")
	if roomID.Type != gjson.String {
		return nil, mxhttp.BadJSON("The event has no room_id")
	}
	ver, err := r.roomVersion(ctx, r.db.Read(), roomID.Str)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room")
	}
	if err != nil {
		return nil, err
	}
	pdu, err := parsePDU(ver, raw)
	if err != nil {
		return nil, mxhttp.BadJSON("%v", err)
	}
	if policyExempt(pdu) {
		return nil, mxhttp.BadJSON("m.room.policy state events with an empty state_key are not signed by the policy server")
	}
	// A room this server has a member in is one it agreed to protect ("The
	// Policy Server can evict itself from the room"). m.room.policy is not
	// required to name it yet: the first events after a room enables it may
	// be asked for before the policy event reaches here.
	joined, err := storage.ServerJoinedNow(ctx, r.db.Read(), roomID.Str, string(r.serverName))
	if err != nil {
		return nil, err
	}
	if !joined {
		return nil, mxhttp.NotFound("This room is not protected by this policy server")
	}
	if err := r.policyServer.check(pdu); err != nil {
		return nil, err
	}
	return r.policyServer.signature(r.serverName, pdu)
}
