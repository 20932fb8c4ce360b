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
		client := &supportedVersionsOnly{JoinClient: r.joins}
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
			if err := r.ingest(ctx, server, ver, resp.JoinEvent, &budget, fetchHoles); err != nil {
				return nil, err
			}
			return r.Event(ctx, resp.JoinEvent.EventID())
		}
		return r.storeJoin(ctx, resp, client.version)
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
func (r *Rooms) storeJoin(ctx context.Context, resp *gomatrixserverlib.PerformJoinResponse, version gomatrixserverlib.RoomVersion) (*Event, error) {
	join := resp.JoinEvent
	join.EventID()
	// Parsed once (LineariseStateResponse would parse the state again,
	// and every event ID is a hash of the event): the state and auth
	// chain in auth order, each event after its auth events.
	authEvs := resp.StateSnapshot.GetAuthEvents().UntrustedEvents(join.Version())
	stateEvs := resp.StateSnapshot.GetStateEvents().UntrustedEvents(join.Version())
	byID := make(map[string]gomatrixserverlib.PDU, len(authEvs)+len(stateEvs))
	for _, p := range slices.Concat(authEvs, stateEvs) {
		byID[p.EventID()] = p
	}
	ordered := gomatrixserverlib.ReverseTopologicalOrdering(slices.Collect(maps.Values(byID)), gomatrixserverlib.TopologicalOrderByAuthEvents)
	state := State{}
	for _, p := range stateEvs {
		if k, ok := stateKeyOf(p); ok {
			state[k] = p.EventID()
		}
	}
	ev, err := r.persist(ctx, incoming{arrival: arriveJoin, pdu: join, stateBefore: state, joinState: ordered, version: version})
	if err != nil {
		return nil, fmt.Errorf("storing the joined room: %w", err)
	}
	return ev, nil
}
