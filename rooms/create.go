package rooms

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// StateEvent is an initial state event of a new room.
type StateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// CreateRequest is a validated POST /createRoom.
type CreateRequest struct {
	Creator                   string
	Version                   gomatrixserverlib.RoomVersion
	Preset                    string // private_chat, trusted_private_chat or public_chat
	Public                    bool   // visibility public: published in the directory
	Name, Topic               *string
	Alias                     string // full alias (#name:server), already validated and free
	Invite                    []string
	IsDirect                  bool
	CreationContent           map[string]json.RawMessage
	InitialState              []StateEvent
	PowerLevelContentOverride map[string]json.RawMessage
}

// Create makes a new room: the create event, the creator's join, power
// levels, alias, preset state, initial state, name, topic and invites, all
// persisted in one transaction.
func (r *Rooms) Create(ctx context.Context, req CreateRequest) (string, error) {
	if req.Version == "" {
		req.Version = r.DefaultVersion
	}
	if !IsSupported(string(req.Version)) {
		return "", mxhttp.UnsupportedVersion("Room version %q is not supported", req.Version)
	}
	// Users of other servers are invited through their server's /invite
	// once the room exists; local invites go in with the room's events.
	var remoteInvites []string
	local := req
	local.Invite = nil
	for _, u := range req.Invite {
		if r.isLocal(u) {
			// An invitee who blocks the invite is left out; the room is
			// made all the same (Invite permission).
			if v, err := r.InvitePermission(ctx, u, req.Creator); err != nil {
				return "", err
			} else if v == InviteBlocked {
				r.log.Info("createRoom: leaving out an invitee who blocks invites", "invitee", u)
				continue
			}
			local.Invite = append(local.Invite, u)
		} else {
			remoteInvites = append(remoteInvites, u)
		}
	}
	protos, err := r.createProtos(ctx, local, req.Invite)
	if err != nil {
		return "", err
	}
	roomID, err := r.newRoomID(req.Version, protos)
	if err != nil {
		return "", err
	}
	unlockRoom := r.locks.lock(roomID)
	unlocked := false
	unlock := func() {
		if !unlocked {
			unlocked = true
			unlockRoom()
		}
	}
	defer unlock()
	var out []*Event
	var snaps []*snapshot
	err = r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		room := storage.Room{RoomID: roomID, Version: string(req.Version), Extremities: []string{}, Published: req.Public, CreatedTS: time.Now().UnixMilli()}
		if err := storage.InsertRoom(ctx, tx, room); err != nil {
			return err
		}
		if req.Alias != "" {
			if err := storage.InsertAlias(ctx, tx, req.Alias, roomID, req.Creator); errors.Is(err, storage.ErrConflict) {
				return mxhttp.RoomInUse("Room alias %s is already taken", req.Alias)
			} else if err != nil {
				return err
			}
		}
		if out, snaps, err = r.appendLocal(ctx, tx, &room, protos); err != nil {
			return err
		}
		return r.runTxHook(ctx, tx, out)
	})
	if err != nil {
		unlock()
		return "", err
	}
	r.committed(out, snaps)
	unlock()
	for _, u := range remoteInvites {
		if _, err := r.inviteRemote(ctx, roomID, ChangeMembership{Sender: req.Creator, Target: u, Membership: spec.Invite, IsDirect: req.IsDirect}); err != nil {
			r.log.Info("inviting a user of another server to a new room", "room", roomID, "user", u, "err", err)
		}
	}
	return roomID, nil
}

// newRoomID names a new room whose first proto is its m.room.create. In
// room versions with domainless room IDs (12, MSC4291) the ID is the create
// event's reference hash: the create event is built here, without room_id,
// and handed to appendLocal as built; older versions get a random local
// part and this server's name.
func (r *Rooms) newRoomID(v gomatrixserverlib.RoomVersion, protos []Proto) (string, error) {
	ver := gomatrixserverlib.MustGetRoomVersion(v)
	if !ver.DomainlessRoomIDs() {
		return "!" + randomString(18) + ":" + string(r.serverName), nil
	}
	p := &protos[0]
	if key, bad := mxhttp.BadObjectKey(p.Content); bad {
		return "", mxhttp.BadJSON("creation_content has the key %s: keys may not hold quotes, backslashes or control characters", key)
	}
	proto := &gomatrixserverlib.ProtoEvent{
		SenderID: p.Sender, Type: p.Type, StateKey: p.StateKey, Content: spec.RawJSON(p.Content),
		PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1, Version: ver,
	}
	pdu, err := ver.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), r.serverName, r.key.ID, r.key.Private)
	if err != nil {
		return "", mxhttp.BadJSON("Invalid m.room.create event: %v", err)
	}
	p.built = pdu
	return "!" + pdu.EventID()[1:], nil
}

// createProtos lists the events of a new room. allInvitees (local and
// remote) get their power (or creator role) in trusted_private_chat; only
// req.Invite get invite events here.
func (r *Rooms) createProtos(ctx context.Context, req CreateRequest, allInvitees []string) ([]Proto, error) {
	ver := gomatrixserverlib.MustGetRoomVersion(req.Version)
	empty := ""
	state := func(typ, key string, content any) Proto {
		b, _ := json.Marshal(content)
		k := key
		return Proto{Sender: req.Creator, Type: typ, StateKey: &k, Content: b}
	}
	// m.room.create: creation_content, then the fields the server owns.
	create := maps.Clone(req.CreationContent)
	if create == nil {
		create = map[string]json.RawMessage{}
	}
	create["room_version"], _ = json.Marshal(req.Version)
	if ver.CreatorInCreateEvent() {
		create["creator"], _ = json.Marshal(req.Creator)
	}
	// Room creators (MSC4289): the sender, additional_creators and, for
	// trusted_private_chat, the invitees. They have infinite power and
	// must not be listed in the power levels.
	creators := map[string]bool{req.Creator: true}
	if ver.PrivilegedCreators() {
		additional, err := additionalCreators(create["additional_creators"])
		if err != nil {
			return nil, err
		}
		if req.Preset == "trusted_private_chat" {
			for _, u := range allInvitees {
				if !slices.Contains(additional, u) && u != req.Creator {
					additional = append(additional, u)
				}
			}
		}
		for _, u := range additional {
			creators[u] = true
		}
		if len(additional) > 0 {
			create["additional_creators"], _ = json.Marshal(additional)
		}
	}
	protos := []Proto{state(spec.MRoomCreate, "", create)}

	member, err := r.memberContent(ctx, req.Creator, spec.Join)
	if err != nil {
		return nil, err
	}
	protos = append(protos, state(spec.MRoomMember, req.Creator, member))

	joinRule, history, guest := "invite", "shared", "can_join"
	if req.Preset == "public_chat" {
		joinRule, guest = "public", "forbidden"
	}
	users := map[string]int64{req.Creator: 100}
	if req.Preset == "trusted_private_chat" {
		for _, u := range allInvitees {
			users[u] = 100
		}
	}
	// Upgrading a room needs 150 in version 12, so that only creators can
	// by default (MSC4289).
	tombstone := int64(100)
	if ver.PrivilegedCreators() {
		for u := range creators {
			delete(users, u)
		}
		tombstone = 150
	}
	// Members of private chats may invite others (as on Synapse, whose
	// private presets override invite to 0); public rooms need 50.
	invite := 0
	if req.Preset == "public_chat" {
		invite = 50
	}
	pl := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": invite,
		"events": map[string]int64{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": tombstone,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]int64{"room": 50},
	}
	plJSON, _ := json.Marshal(pl)
	if len(req.PowerLevelContentOverride) > 0 {
		merged := map[string]json.RawMessage{}
		_ = json.Unmarshal(plJSON, &merged)
		maps.Copy(merged, req.PowerLevelContentOverride)
		plJSON, _ = json.Marshal(merged)
	}
	protos = append(protos, Proto{Sender: req.Creator, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: plJSON})
	if req.Alias != "" {
		protos = append(protos, state(spec.MRoomCanonicalAlias, "", map[string]string{"alias": req.Alias}))
	}
	// Preset state, unless initial_state sets the same keys.
	overridden := map[storage.StateKey]bool{}
	for _, s := range req.InitialState {
		overridden[storage.StateKey{Type: s.Type, StateKey: s.StateKey}] = true
	}
	for _, p := range []Proto{
		state(spec.MRoomJoinRules, "", map[string]string{"join_rule": joinRule}),
		state(spec.MRoomHistoryVisibility, "", map[string]string{"history_visibility": history}),
		state(spec.MRoomGuestAccess, "", map[string]string{"guest_access": guest}),
	} {
		// No m.room.guest_access means forbidden (its spec), so public_chat
		// gets there without an event, as Synapse does; other servers'
		// tests expect the room to start without it.
		if p.Type == spec.MRoomGuestAccess && guest == "forbidden" {
			continue
		}
		if !overridden[storage.StateKey{Type: p.Type, StateKey: ""}] {
			protos = append(protos, p)
		}
	}
	for _, s := range req.InitialState {
		k := s.StateKey
		content := s.Content
		if len(content) == 0 {
			content = json.RawMessage("{}")
		}
		protos = append(protos, Proto{Sender: req.Creator, Type: s.Type, StateKey: &k, Content: content})
	}
	if req.Name != nil {
		protos = append(protos, state(spec.MRoomName, "", map[string]string{"name": *req.Name}))
	}
	if req.Topic != nil {
		protos = append(protos, state(spec.MRoomTopic, "", map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"body": *req.Topic, "mimetype": "text/plain"}}},
		}))
	}
	for _, u := range req.Invite {
		if !r.isLocal(u) {
			continue // invited through their server once the room exists (Create)
		}
		content, err := r.memberContent(ctx, u, spec.Invite)
		if err != nil {
			return nil, err
		}
		if req.IsDirect {
			content["is_direct"] = true
		}
		protos = append(protos, state(spec.MRoomMember, u, content))
	}
	return protos, nil
}

// memberContent is the content of a membership event for a local user:
// the membership plus, for joins and invites, the user's profile.
func (r *Rooms) memberContent(ctx context.Context, userID, membership string) (map[string]any, error) {
	content := map[string]any{"membership": membership}
	if membership != spec.Join && membership != spec.Invite {
		return content, nil
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil || uid.Domain() != r.serverName {
		return content, nil // remote users' profiles come with federation
	}
	p, err := r.db.GetProfile(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return content, nil
	}
	if err != nil {
		return nil, err
	}
	if p.DisplayName != nil {
		content["displayname"] = *p.DisplayName
	}
	if p.AvatarURL != nil {
		content["avatar_url"] = *p.AvatarURL
	}
	return content, nil
}

// additionalCreators validates m.room.create's additional_creators: absent,
// or an array of valid user IDs (room version 12 auth rule 1.4).
func additionalCreators(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, mxhttp.BadJSON("additional_creators must be an array of user IDs")
	}
	for _, u := range list {
		if _, err := spec.NewUserID(u, true); err != nil {
			return nil, mxhttp.BadJSON("additional_creators: %q is not a valid user ID", u)
		}
	}
	return list, nil
}

func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
