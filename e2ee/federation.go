package e2ee

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/storage"
)

// End-to-end encryption across servers (server-server API, Device
// Management, End-to-End Encryption, Send-to-Device messaging): local
// device-list and cross-signing changes go out as m.device_list_update and
// m.signing_key_update EDUs to every server sharing a room with the user;
// other servers' updates are kept in the remote_device_* tables, which
// answer /keys/query for their users while they stay complete; keys of
// users we hold no list for are asked of their servers.

// remoteTimeout bounds a key query, claim or device-list resync to another
// server, so one slow server delays a client's request at most this long.
const remoteTimeout = 10 * time.Second

// maxParallelResyncs bounds the device-list fetches one key query runs at
// once.
const maxParallelResyncs = 8

// Remote is what end-to-end encryption asks of other servers; the
// federation package implements it over its signing client and send queue.
type Remote interface {
	// QueueEDU queues an EDU for servers in tx: it is sent once tx commits.
	QueueEDU(ctx context.Context, tx *sql.Tx, servers []string, eduType string, content any) error
	// QueryKeys is POST /_matrix/federation/v1/user/keys/query.
	QueryKeys(ctx context.Context, server string, deviceKeys map[string][]string) (RemoteKeys, error)
	// ClaimKeys is POST /_matrix/federation/v1/user/keys/claim.
	ClaimKeys(ctx context.Context, server string, claims map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// UserDevices is GET /_matrix/federation/v1/user/devices/{userId}.
	UserDevices(ctx context.Context, server, userID string) (UserDevices, error)
}

// RemoteKeys is the answer of POST /user/keys/query.
type RemoteKeys struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// UserDevices is the answer of GET /user/devices/{userId}.
type UserDevices struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []UserDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// UserDevice is one device in UserDevices.
type UserDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys,omitempty"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// DeviceListUpdate is the content of an m.device_list_update EDU.
type DeviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id,omitempty"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// SigningKeyUpdate is the content of an m.signing_key_update EDU.
type SigningKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// SetRemote connects end-to-end encryption to other servers. Without it
// remote users are reported under failures and nothing is sent.
func (e *E2EE) SetRemote(r Remote) { e.remote = r }

// serverOf is the server name of a user ID, "" if it is not one.
func serverOf(userID string) string {
	_, server, ok := strings.Cut(userID, ":")
	if !ok || !strings.HasPrefix(userID, "@") {
		return ""
	}
	return server
}

// remoteServersSharingRoomWith lists the other servers with a member
// joined to a room userID is joined to.
func (e *E2EE) remoteServersSharingRoomWith(ctx context.Context, q storage.Reader, userID string) ([]string, error) {
	users, err := storage.UsersSharingRoomWith(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, u := range users {
		if s := serverOf(u); s != "" && s != e.serverName && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// deviceListDestinations lists the servers a local user's device-list and
// cross-signing changes go to: those sharing a room with them, and for a
// room whose state is partial the servers its send_join answer named
// (MSC3902: its members are not known yet).
func (e *E2EE) deviceListDestinations(ctx context.Context, q storage.Reader, userID string) ([]string, error) {
	out, err := e.remoteServersSharingRoomWith(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	partial, err := storage.PartialStateServersOfUser(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	for _, s := range partial {
		if s != e.serverName && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out, nil
}

// sharesRoomWithLocalUser reports whether a local user is joined to a room
// userID is joined to: only then do we follow userID's device list.
func (e *E2EE) sharesRoomWithLocalUser(ctx context.Context, q storage.Reader, userID string) (bool, error) {
	users, err := storage.UsersSharingRoomWith(ctx, q, userID)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(users, func(u string) bool { return u != userID && e.isLocal(u) }), nil
}

// queueDeviceListUpdate sends a local device's change (stream position pos,
// the user's previous one prev) to the servers sharing a room with the user.
func (e *E2EE) queueDeviceListUpdate(ctx context.Context, tx *sql.Tx, userID, deviceID string, pos, prev int64) error {
	servers, err := e.deviceListDestinations(ctx, tx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	u := DeviceListUpdate{UserID: userID, DeviceID: deviceID, StreamID: pos}
	if prev > 0 {
		u.PrevID = []int64{prev}
	}
	names, err := storage.DeviceNames(ctx, tx, userID)
	if err != nil {
		return err
	}
	name, exists := names[deviceID]
	if !exists {
		u.Deleted = true
	} else {
		u.DisplayName = name
		k, err := e.localKeys(ctx, tx, userID, "", []string{deviceID})
		if err != nil {
			return err
		}
		u.Keys = k.devices[deviceID]
	}
	return e.remote.QueueEDU(ctx, tx, servers, "m.device_list_update", u)
}

// queueSigningKeyUpdate sends a local user's master and self-signing keys
// to the servers sharing a room with them.
func (e *E2EE) queueSigningKeyUpdate(ctx context.Context, tx *sql.Tx, userID string) error {
	servers, err := e.deviceListDestinations(ctx, tx, userID)
	if err != nil || len(servers) == 0 {
		return err
	}
	sigsOf, err := visibleSignatures(ctx, tx, userID, "")
	if err != nil {
		return err
	}
	k, err := localCrossSigningKeys(ctx, tx, userID, sigsOf)
	if err != nil {
		return err
	}
	if k.master == nil {
		return nil
	}
	return e.remote.QueueEDU(ctx, tx, servers, "m.signing_key_update",
		SigningKeyUpdate{UserID: userID, MasterKey: k.master, SelfSigningKey: k.selfSigning})
}

// LocalUserDevices answers GET /user/devices/{userId} for a local user.
func (e *E2EE) LocalUserDevices(ctx context.Context, userID string) (UserDevices, error) {
	q := e.db.Read()
	out := UserDevices{UserID: userID, Devices: []UserDevice{}}
	var err error
	if out.StreamID, err = storage.LastDeviceListPosition(ctx, q, userID); err != nil {
		return out, err
	}
	names, err := storage.DeviceNames(ctx, q, userID)
	if err != nil {
		return out, err
	}
	k, err := e.localKeys(ctx, q, userID, "", nil)
	if err != nil {
		return out, err
	}
	ids := make([]string, 0, len(names))
	for id := range names {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		out.Devices = append(out.Devices, UserDevice{DeviceID: id, DisplayName: names[id], Keys: k.devices[id]})
	}
	out.MasterKey, out.SelfSigningKey = k.master, k.selfSigning
	return out, nil
}

// LocalKeys answers POST /user/keys/query: the keys of the local users in
// query, as another server may see them.
func (e *E2EE) LocalKeys(ctx context.Context, query map[string][]string) (RemoteKeys, error) {
	out := RemoteKeys{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}}
	for userID, deviceIDs := range query {
		if !e.isLocal(userID) {
			continue
		}
		k, err := e.localKeys(ctx, e.db.Read(), userID, "", deviceIDs)
		if err != nil {
			return out, err
		}
		out.DeviceKeys[userID] = k.devices
		if k.master != nil {
			out.MasterKeys[userID] = k.master
		}
		if k.selfSigning != nil {
			out.SelfSigningKeys[userID] = k.selfSigning
		}
	}
	return out, nil
}

// remoteFailure is a failures entry for a server that did not answer.
func remoteFailure(err error) map[string]any {
	return map[string]any{"status": 503, "message": "The remote server could not be reached: " + err.Error()}
}

// queryRemoteKeys fills resp with remote users' keys: from the device
// lists we keep for users whose servers keep us updated, else from their
// servers, all servers at once. The list of a user who shares a room with
// a local user (whose server so keeps us updated) is fetched whole and
// kept first (GET /user/devices), as the spec's Device management has it.
func (e *E2EE) queryRemoteKeys(ctx context.Context, byServer map[string]map[string][]string, resp *QueryResponse) error {
	ask := map[string]map[string][]string{}
	type user struct {
		server, id string
		devices    []string
	}
	var track []user
	for server, users := range byServer {
		for userID, deviceIDs := range users {
			cached, err := e.cachedKeys(ctx, userID, deviceIDs, resp)
			if err != nil {
				return err
			}
			if cached {
				continue
			}
			if e.remote != nil {
				shares, err := e.sharesRoomWithLocalUser(ctx, e.db.Read(), userID)
				if err != nil {
					return err
				}
				if shares {
					track = append(track, user{server, userID, deviceIDs})
					continue
				}
			}
			if ask[server] == nil {
				ask[server] = map[string][]string{}
			}
			ask[server][userID] = deviceIDs
		}
	}
	if len(track) > 0 {
		fetchErrs := make([]error, len(track))
		var wg sync.WaitGroup
		sem := make(chan struct{}, maxParallelResyncs)
		var errMu sync.Mutex
		var firstErr error
		for i, u := range track {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				fetchErr, err := e.fetchDeviceList(ctx, u.server, u.id, false)
				fetchErrs[i] = fetchErr
				if err != nil {
					errMu.Lock()
					firstErr = cmp.Or(firstErr, err)
					errMu.Unlock()
				}
			}()
		}
		wg.Wait()
		if firstErr != nil {
			return firstErr
		}
		for i, u := range track {
			if fetchErrs[i] != nil {
				resp.Failures[u.server] = remoteFailure(fetchErrs[i])
				continue
			}
			cached, err := e.cachedKeys(ctx, u.id, u.devices, resp)
			if err != nil {
				return err
			}
			if !cached { // dropped again meanwhile: ask as for any user
				if ask[u.server] == nil {
					ask[u.server] = map[string][]string{}
				}
				ask[u.server][u.id] = u.devices
			}
		}
	}
	if len(ask) == 0 {
		return nil
	}
	if e.remote == nil {
		for server := range ask {
			resp.Failures[server] = remoteFailure(errors.New("federation is off"))
		}
		return nil
	}
	type answer struct {
		server string
		keys   RemoteKeys
		err    error
	}
	answers := make(chan answer, len(ask))
	for server, users := range ask {
		go func() {
			qctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			k, err := e.remote.QueryKeys(qctx, server, users)
			answers <- answer{server, k, err}
		}()
	}
	for range ask {
		a := <-answers
		if a.err != nil {
			e.log.Info("remote key query failed", "server", a.server, "err", a.err)
			resp.Failures[a.server] = remoteFailure(a.err)
			continue
		}
		// A server speaks only for its own users, and only for those asked.
		for userID := range ask[a.server] {
			devs := map[string]json.RawMessage{}
			for deviceID, k := range a.keys.DeviceKeys[userID] {
				if keyNames(k, userID, deviceID) {
					devs[deviceID] = k
				}
			}
			resp.DeviceKeys[userID] = devs
			if k, ok := a.keys.MasterKeys[userID]; ok && keyNames(k, userID, "") {
				resp.MasterKeys[userID] = k
			}
			if k, ok := a.keys.SelfSigningKeys[userID]; ok && keyNames(k, userID, "") {
				resp.SelfSigningKeys[userID] = k
			}
		}
	}
	return nil
}

// keyNames reports whether a key object names userID (and deviceID, when
// set) as its owner.
func keyNames(raw json.RawMessage, userID, deviceID string) bool {
	var f struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if json.Unmarshal(raw, &f) != nil || f.UserID != userID {
		return false
	}
	return deviceID == "" || f.DeviceID == deviceID
}

// cachedKeys answers for a remote user from the device list we keep, if
// we keep one.
func (e *E2EE) cachedKeys(ctx context.Context, userID string, deviceIDs []string, resp *QueryResponse) (bool, error) {
	q := e.db.Read()
	if _, ok, err := storage.RemoteDeviceListStreamID(ctx, q, userID); err != nil || !ok {
		return false, err
	}
	devs, err := storage.RemoteDevicesWithKeys(ctx, q, userID, deviceIDs)
	if err != nil {
		return false, err
	}
	resp.DeviceKeys[userID] = map[string]json.RawMessage{}
	for _, d := range devs {
		k := json.RawMessage(d.KeyJSON)
		if d.DisplayName != "" {
			k = withUnsigned(k, map[string]any{"device_display_name": d.DisplayName})
		}
		resp.DeviceKeys[userID][d.DeviceID] = k
	}
	cs, err := storage.RemoteCrossSigningKeys(ctx, q, userID)
	if err != nil {
		return false, err
	}
	if k, ok := cs[keyTypeMaster]; ok {
		resp.MasterKeys[userID] = json.RawMessage(k)
	}
	if k, ok := cs[keyTypeSelfSigning]; ok {
		resp.SelfSigningKeys[userID] = json.RawMessage(k)
	}
	return true, nil
}

// withUnsigned sets a key object's unsigned field.
func withUnsigned(raw json.RawMessage, unsigned any) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	m["unsigned"], _ = json.Marshal(unsigned)
	b, _ := json.Marshal(m)
	return b
}

// claimRemoteKeys claims keys from each server at once; the answers go
// into resp, servers that fail under failures.
func (e *E2EE) claimRemoteKeys(ctx context.Context, byServer map[string]map[string]map[string]string, resp *ClaimResponse) {
	if e.remote == nil {
		for server := range byServer {
			resp.Failures[server] = remoteFailure(errors.New("federation is off"))
		}
		return
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, claims := range byServer {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, remoteTimeout)
			defer cancel()
			keys, err := e.remote.ClaimKeys(cctx, server, claims)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				e.log.Info("remote key claim failed", "server", server, "err", err)
				resp.Failures[server] = remoteFailure(err)
				return
			}
			for userID, devices := range claims {
				for deviceID := range devices {
					if k, ok := keys[userID][deviceID]; ok {
						if resp.OneTimeKeys[userID] == nil {
							resp.OneTimeKeys[userID] = map[string]map[string]json.RawMessage{}
						}
						resp.OneTimeKeys[userID][deviceID] = k
					}
				}
			}
		}()
	}
	wg.Wait()
}

// ReceiveToDevice delivers an m.direct_to_device EDU from origin (its
// sender already checked to be origin's) to the local devices it names. A
// message_id seen before from the same sender is not delivered again.
func (e *E2EE) ReceiveToDevice(ctx context.Context, origin, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	var delivered []target
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		err := storage.InsertTxn(ctx, tx, sender, "", "federation/to_device/"+origin, messageID, "", time.Now().UnixMilli())
		if errors.Is(err, storage.ErrConflict) {
			return errDuplicateTxn
		}
		if err != nil {
			return err
		}
		delivered, err = e.deliverLocal(ctx, tx, sender, eventType, messages)
		return err
	})
	if errors.Is(err, errDuplicateTxn) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delivering to-device message from %s: %w", origin, err)
	}
	e.notifyDelivered(delivered)
	return nil
}

// ReceiveDeviceListUpdate applies an m.device_list_update EDU (its user
// already checked to be origin's). An update that follows the last one we
// applied is applied on its own; otherwise, or when we keep no list for
// the user yet, the whole list is fetched again (GET /user/devices).
// Updates about users no local user shares a room with are ignored.
func (e *E2EE) ReceiveDeviceListUpdate(ctx context.Context, origin string, u DeviceListUpdate) error {
	if ok, err := e.sharesRoomWithLocalUser(ctx, e.db.Read(), u.UserID); err != nil || !ok {
		if err != nil {
			return err
		}
		return e.keepPending(ctx, u.UserID)
	}
	stored, have, err := storage.RemoteDeviceListStreamID(ctx, e.db.Read(), u.UserID)
	if err != nil {
		return err
	}
	if have && u.StreamID <= stored {
		return nil // already applied
	}
	if !have || !slices.Contains(u.PrevID, stored) {
		// An update without prev_id about a user we keep no list for is
		// the announcement of a user who just started sharing a room with
		// us: local users see them as changed through that membership
		// change already, so the resync only fills the list.
		announced := !have && len(u.PrevID) == 0
		return e.resyncDeviceList(ctx, origin, u.UserID, !announced)
	}
	dev := storage.RemoteDevice{DeviceID: u.DeviceID, DisplayName: u.DisplayName}
	if len(u.Keys) > 0 && string(u.Keys) != "null" {
		if !keyNames(u.Keys, u.UserID, u.DeviceID) {
			return fmt.Errorf("device_list_update for %s %s carries keys of another device", u.UserID, u.DeviceID)
		}
		dev.KeyJSON = string(u.Keys)
	}
	err = e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if u.Deleted {
			err = storage.DeleteRemoteDevice(ctx, tx, u.UserID, u.DeviceID)
		} else {
			err = storage.UpsertRemoteDevice(ctx, tx, u.UserID, dev)
		}
		if err != nil {
			return err
		}
		if err := storage.SetRemoteDeviceListStreamID(ctx, tx, u.UserID, u.StreamID); err != nil {
			return err
		}
		_, err := e.db.AppendDeviceListChange(ctx, tx, u.UserID)
		return err
	})
	if err != nil {
		return err
	}
	e.NotifyDeviceListChange(ctx, u.UserID)
	return nil
}

// resyncDeviceList replaces what we keep of a remote user's devices with
// their server's full list. If the server does not answer, the list is
// dropped (so /keys/query asks the server). With showChanged, local users
// sharing a room with the user see them in device_lists.changed.
func (e *E2EE) resyncDeviceList(ctx context.Context, origin, userID string, showChanged bool) error {
	_, err := e.fetchDeviceList(ctx, origin, userID, showChanged)
	return err
}

// fetchDeviceList is resyncDeviceList that also says why the server's
// list could not be had (fetchErr), if it could not.
func (e *E2EE) fetchDeviceList(ctx context.Context, origin, userID string, showChanged bool) (fetchErr, err error) {
	var list UserDevices
	if e.remote == nil {
		fetchErr = errors.New("federation is off")
	} else {
		rctx, cancel := context.WithTimeout(ctx, remoteTimeout)
		list, fetchErr = e.remote.UserDevices(rctx, origin, userID)
		cancel()
		if fetchErr == nil && list.UserID != userID {
			fetchErr = fmt.Errorf("the answer is about %q", list.UserID)
		}
	}
	if fetchErr != nil {
		e.log.Info("device list resync failed", "user_id", userID, "server", origin, "err", fetchErr)
	}
	err = e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := storage.ForgetRemoteDeviceList(ctx, tx, userID, fetchErr != nil); err != nil {
			return err
		}
		if fetchErr == nil {
			for _, d := range list.Devices {
				rd := storage.RemoteDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName}
				if len(d.Keys) > 0 && string(d.Keys) != "null" && keyNames(d.Keys, userID, d.DeviceID) {
					rd.KeyJSON = string(d.Keys)
				}
				if err := storage.UpsertRemoteDevice(ctx, tx, userID, rd); err != nil {
					return err
				}
			}
			if err := e.storeRemoteCrossSigning(ctx, tx, userID, list.MasterKey, list.SelfSigningKey); err != nil {
				return err
			}
			if err := storage.SetRemoteDeviceListStreamID(ctx, tx, userID, list.StreamID); err != nil {
				return err
			}
		}
		if !showChanged {
			return nil
		}
		_, err := e.db.AppendDeviceListChange(ctx, tx, userID)
		return err
	})
	if err != nil || !showChanged {
		return fetchErr, err
	}
	e.NotifyDeviceListChange(ctx, userID)
	return fetchErr, nil
}

func (e *E2EE) storeRemoteCrossSigning(ctx context.Context, tx *sql.Tx, userID string, master, selfSigning json.RawMessage) error {
	for _, k := range []struct {
		typ string
		raw json.RawMessage
	}{{keyTypeMaster, master}, {keyTypeSelfSigning, selfSigning}} {
		if len(k.raw) == 0 || string(k.raw) == "null" || !keyNames(k.raw, userID, "") {
			continue
		}
		if err := storage.UpsertRemoteCrossSigningKey(ctx, tx, userID, k.typ, string(k.raw)); err != nil {
			return err
		}
	}
	return nil
}

// ReceiveSigningKeyUpdate stores a remote user's new master and
// self-signing keys (m.signing_key_update, its user already checked to be
// origin's) and shows the user as changed.
func (e *E2EE) ReceiveSigningKeyUpdate(ctx context.Context, u SigningKeyUpdate) error {
	if ok, err := e.sharesRoomWithLocalUser(ctx, e.db.Read(), u.UserID); err != nil || !ok {
		if err != nil {
			return err
		}
		return e.keepPending(ctx, u.UserID)
	}
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := e.storeRemoteCrossSigning(ctx, tx, u.UserID, u.MasterKey, u.SelfSigningKey); err != nil {
			return err
		}
		_, err := e.db.AppendDeviceListChange(ctx, tx, u.UserID)
		return err
	})
	if err != nil {
		return err
	}
	e.NotifyDeviceListChange(ctx, u.UserID)
	return nil
}

// MembershipChanged keeps device lists flowing between servers. A local
// user who joins a room announces their devices to the servers in it that
// shared no room with them before. Once no local user shares a room with
// a remote user, their server stops sending us updates, so what we keep
// of their devices is dropped (and asked of their server again until
// updates flow anew). Called for every committed m.room.member event.
func (e *E2EE) MembershipChanged(ctx context.Context, roomID, userID, membership string) error {
	if membership == "join" {
		if !e.isLocal(userID) || e.remote == nil {
			return nil
		}
		return e.announceDevices(ctx, roomID, userID)
	}
	candidates := []string{userID}
	if e.isLocal(userID) {
		ms, err := storage.MembersOfRoom(ctx, e.db.Read(), roomID)
		if err != nil {
			return err
		}
		candidates = candidates[:0]
		for _, m := range ms {
			if m.Membership == "join" && !e.isLocal(m.UserID) {
				candidates = append(candidates, m.UserID)
			}
		}
	}
	for _, u := range candidates {
		if _, have, err := storage.RemoteDeviceListStreamID(ctx, e.db.Read(), u); err != nil || !have {
			if err != nil {
				return err
			}
			continue
		}
		shares, err := e.sharesRoomWithLocalUser(ctx, e.db.Read(), u)
		if err != nil {
			return err
		}
		if !shares {
			if err := e.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.ForgetRemoteDeviceList(ctx, tx, u, false) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// announceDevices sends a local user's devices and cross-signing keys,
// who just joined roomID, to the servers in it that shared no other room
// with them (server-server API, Device Management: updates are sent when
// the user joins a room with servers not yet receiving them).
func (e *E2EE) announceDevices(ctx context.Context, roomID, userID string) error {
	q := e.db.Read()
	serversOf := func(roomID string) (map[string]bool, error) {
		ms, err := storage.MembersOfRoom(ctx, q, roomID)
		if err != nil {
			return nil, err
		}
		out := map[string]bool{}
		for _, m := range ms {
			if s := serverOf(m.UserID); m.Membership == "join" && s != e.serverName && s != "" {
				out[s] = true
			}
		}
		return out, nil
	}
	fresh, err := serversOf(roomID)
	if err != nil || len(fresh) == 0 {
		return err
	}
	joined, err := storage.RoomsOfUser(ctx, q, userID, "join")
	if err != nil {
		return err
	}
	for _, m := range joined {
		if m.RoomID == roomID {
			continue
		}
		old, err := serversOf(m.RoomID)
		if err != nil {
			return err
		}
		for s := range old {
			delete(fresh, s)
		}
	}
	if len(fresh) == 0 {
		return nil
	}
	servers := sortedKeys(fresh)
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error { return e.queueDeviceList(ctx, tx, userID, servers) })
}

// queueDeviceList sends all of a local user's devices, and their
// cross-signing keys, to servers (in tx).
func (e *E2EE) queueDeviceList(ctx context.Context, tx *sql.Tx, userID string, servers []string) error {
	pos, err := storage.LastDeviceListPosition(ctx, tx, userID)
	if err != nil {
		return err
	}
	names, err := storage.DeviceNames(ctx, tx, userID)
	if err != nil {
		return err
	}
	k, err := e.localKeys(ctx, tx, userID, "", nil)
	if err != nil {
		return err
	}
	for _, id := range sortedKeys(keysOf(names)) {
		u := DeviceListUpdate{UserID: userID, DeviceID: id, DisplayName: names[id], StreamID: pos, Keys: k.devices[id]}
		if err := e.remote.QueueEDU(ctx, tx, servers, "m.device_list_update", u); err != nil {
			return err
		}
	}
	if k.master == nil {
		return nil
	}
	return e.remote.QueueEDU(ctx, tx, servers, "m.signing_key_update",
		SigningKeyUpdate{UserID: userID, MasterKey: k.master, SelfSigningKey: k.selfSigning})
}

func keysOf(m map[string]string) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
