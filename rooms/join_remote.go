package rooms

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// JoinClient performs make_join and send_join against a remote server; the
// federation package implements it over its signing client.
type JoinClient = gomatrixserverlib.FederatedJoinClient

// supportedVersionsOnly refuses make_join answers for room versions Hearth
// does not support, before anything is signed or sent, and remembers the
// room's version (the join event only knows its base version, owned.go).
type supportedVersionsOnly struct {
	JoinClient
	version gomatrixserverlib.RoomVersion
	sent    gomatrixserverlib.SendJoinResponse
	// partial: ask for a partial-state answer (MSC3706).
	partial bool
}

// SendJoin keeps the answer as it came, for recheckOwnedState and the
// partial-state record.
func (c *supportedVersionsOnly) SendJoin(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	if pc, ok := c.JoinClient.(partialJoinClient); ok && c.partial {
		res, err := pc.SendJoinPartialState(ctx, origin, s, event)
		c.sent = res
		if err == nil && res.GetMembersOmitted() {
			return newPartialAnswer(res, event), nil
		}
		return res, err
	}
	res, err := c.JoinClient.SendJoin(ctx, origin, s, event)
	c.sent = res
	return res, err
}

func (c *supportedVersionsOnly) MakeJoin(ctx context.Context, origin, s spec.ServerName, roomID, userID string) (gomatrixserverlib.MakeJoinResponse, error) {
	res, err := c.JoinClient.MakeJoin(ctx, origin, s, roomID, userID)
	if err != nil {
		return nil, err
	}
	if v := res.GetRoomVersion(); v != "" && !IsSupported(string(v)) {
		return nil, fmt.Errorf("room %s has version %q, which this server does not support", roomID, v)
	}
	c.version = res.GetRoomVersion()
	return res, nil
}

// JoinRemote joins a local user to a room on other servers, trying each
// server in turn (server-server API, Joining Rooms). PerformJoin takes the
// event template from make_join but sets type, room, sender, state key and
// membership itself, so a hostile template cannot make us sign something
// else. The returned state is verified (signatures, auth chain, the join
// allowed by it) before it is stored.
func (r *Rooms) JoinRemote(ctx context.Context, roomID, userID string, servers []spec.ServerName, content map[string]any) (*Event, error) {
	if r.keyRing == nil || r.joins == nil {
		return nil, mxhttp.NotFound("Room %s is not known to this server and federation is not available", roomID)
	}
	if err := r.CheckNotBlocked(ctx, roomID); err != nil {
		return nil, err
	}
	// A ban our copy of the room holds (a partial-state room's too) is
	// not worked around through another server.
	if m, _, err := r.MembershipOf(ctx, roomID, userID); err == nil && m == spec.Ban {
		return nil, mxhttp.Forbidden("You are banned from room %s", roomID)
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid room ID %q", roomID)
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for _, server := range servers {
		if server == r.serverName {
			continue
		}
		input := gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: server, Content: content,
			PrivateKey: r.key.Private, KeyID: r.key.ID, KeyRing: r.keyRing,
			EventProvider: r.remoteEventProvider(ctx, server),
			UserIDQuerier: userIDForSender,
			GetOrCreateSenderID: func(context.Context, spec.UserID, spec.RoomID, string) (spec.SenderID, ed25519.PrivateKey, error) {
				return "", nil, errors.New("pseudo-ID rooms are not supported")
			},
			StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
		}
		client := &supportedVersionsOnly{JoinClient: r.joins, partial: r.PartialStateJoins}
		resp, ferr := gomatrixserverlib.PerformJoin(ctx, client, input)
		if ferr != nil {
			lastErr = ferr
			r.log.Info("remote join failed", "room", roomID, "via", server, "err", ferr.Err)
			continue
		}
		if live, _ := r.CanJoinLocally(ctx, roomID); live {
			// We have the room (a restricted join only another server could
			// authorise): the join is one more event of it.
			budget := maxFetchedEvents
			ver, err := r.roomVersion(ctx, r.db.Read(), roomID)
			if err != nil {
				return nil, err
			}
			// The server that took it sends it to the room.
			r.sentJoins.Store(resp.JoinEvent.EventID(), true)
			defer r.sentJoins.Delete(resp.JoinEvent.EventID())
			if err := r.ingest(ctx, server, ver, resp.JoinEvent, &budget, fetchHoles); err != nil {
				return nil, err
			}
			return r.Event(ctx, resp.JoinEvent.EventID())
		}
		return r.storeJoin(ctx, server, resp, client.version, client.sent)
	}
	if lastErr == nil {
		return nil, mxhttp.NotFound("No server to join %s through", roomID)
	}
	return nil, mxhttp.Forbidden("Could not join %s: %v", roomID, lastErr)
}

// remoteEventProvider fetches auth events missing from a send_join answer.
func (r *Rooms) remoteEventProvider(ctx context.Context, server spec.ServerName) gomatrixserverlib.EventProvider {
	return func(ver gomatrixserverlib.RoomVersion, ids []string) ([]gomatrixserverlib.PDU, error) {
		verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		var out []gomatrixserverlib.PDU
		for _, id := range ids {
			raw, err := r.remote.Event(ctx, server, id)
			if err != nil {
				return nil, err
			}
			p, err := r.parseRemote(ctx, verImpl, raw)
			if err != nil {
				return nil, err
			}
			out = append(out, p)
		}
		return out, nil
	}
}

// storeJoin stores the verified state and auth chain of a send_join answer
// as outliers, then the join itself as the room's first timeline event on
// this server, with that state before it. A PDU of the room that arrived
// meanwhile (the room goes on while send_join is answered) may have stored
// some of these events, or be storing them now, and may have put the join
// in the timeline: then the stored join is returned.
//
// A partial-state answer (members omitted, MSC3706) is stored the same way
// and recorded as partial with the servers to resync from, the resident
// first; the resync starts at once (partial_state.go).
func (r *Rooms) storeJoin(ctx context.Context, resident spec.ServerName, resp *gomatrixserverlib.PerformJoinResponse, version gomatrixserverlib.RoomVersion, sent gomatrixserverlib.SendJoinResponse) (*Event, error) {
	join := resp.JoinEvent
	join.EventID()
	// Parsed once (LineariseStateResponse would parse the state again,
	// and every event ID is a hash of the event): the state and auth
	// chain in auth order, each event after its auth events.
	authEvs := resp.StateSnapshot.GetAuthEvents().UntrustedEvents(join.Version())
	stateEvs := resp.StateSnapshot.GetStateEvents().UntrustedEvents(join.Version())
	if sent != nil && sent.GetMembersOmitted() {
		// The library checked only part of the state (partialAnswer).
		verImpl, err := gomatrixserverlib.GetRoomVersion(version)
		if err != nil {
			return nil, err
		}
		rest, err := r.checkRestOfState(ctx, verImpl, join.RoomID().String(), sent, slices.Concat(authEvs, stateEvs))
		if err != nil {
			return nil, mxhttp.Forbidden("Could not join %s: %v", join.RoomID().String(), err)
		}
		stateEvs = append(stateEvs, rest...)
	}
	if _, owned := ownedBases[version]; owned && sent != nil {
		moreAuth, moreState := r.recheckOwnedState(ctx, version, sent, authEvs, stateEvs)
		authEvs, stateEvs = append(authEvs, moreAuth...), append(stateEvs, moreState...)
	}
	byID := make(map[string]gomatrixserverlib.PDU, len(authEvs)+len(stateEvs))
	for _, p := range slices.Concat(authEvs, stateEvs) {
		byID[p.EventID()] = p
	}
	ordered := authOrder(slices.Collect(maps.Values(byID)))
	state := State{}
	for _, p := range stateEvs {
		if k, ok := stateKeyOf(p); ok {
			state[k] = p.EventID()
		}
	}
	in := incoming{arrival: arriveJoin, pdu: join, stateBefore: state, joinState: ordered, version: version}
	if sent != nil && sent.GetMembersOmitted() {
		in.partialServers = []string{string(resident)}
		for _, s := range sent.GetServersInRoom() {
			if s != string(resident) && s != string(r.serverName) && !slices.Contains(in.partialServers, s) {
				in.partialServers = append(in.partialServers, s)
			}
		}
	}
	ev, err := r.persist(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("storing the joined room: %w", err)
	}
	if in.partialServers != nil {
		r.startResync(join.RoomID().String())
	}
	return ev, nil
}

// recheckOwnedState returns the events of a send_join answer for an
// MSC3757 room that the library's check of it (CheckSendJoinResponse,
// which applies its own rule 8) dropped, but which pass the same checks
// with the room's rules: a valid signature, and allowed by their auth
// events. They are owned state: the auth events, the state events.
func (r *Rooms) recheckOwnedState(ctx context.Context, version gomatrixserverlib.RoomVersion, sent gomatrixserverlib.SendJoinResponse, auth, state []gomatrixserverlib.PDU) (moreAuth, moreState []gomatrixserverlib.PDU) {
	byID := map[string]gomatrixserverlib.PDU{}
	for _, p := range slices.Concat(auth, state) {
		byID[p.EventID()] = p
	}
	rawState := sent.GetStateEvents().UntrustedEvents(version)
	isState := map[string]bool{}
	for _, p := range rawState {
		isState[p.EventID()] = true
	}
	dropped := map[string]gomatrixserverlib.PDU{}
	for _, p := range slices.Concat(sent.GetAuthEvents().UntrustedEvents(version), rawState) {
		if k, ok := stateKeyOf(p); ok && sent.GetMembersOmitted() && deferredState(k) {
			continue // left for the resync (checkRestOfState)
		}
		if _, kept := byID[p.EventID()]; !kept && p.StateKey() != nil {
			dropped[p.EventID()] = p
		}
	}
	ordered := authOrder(slices.Collect(maps.Values(dropped)))
	for _, p := range ordered {
		if gomatrixserverlib.VerifyEventSignatures(ctx, p, r.keyRing, userIDForSender) != nil {
			continue
		}
		var authEvs []gomatrixserverlib.PDU
		for _, id := range p.AuthEventIDs() {
			if a, ok := byID[id]; ok {
				authEvs = append(authEvs, a)
			}
		}
		provider, err := gomatrixserverlib.NewAuthEvents(authEvs)
		if err != nil || allowed(p, provider) != nil {
			continue
		}
		byID[p.EventID()] = p
		if isState[p.EventID()] {
			moreState = append(moreState, p)
		} else {
			moreAuth = append(moreAuth, p)
		}
	}
	return moreAuth, moreState
}
