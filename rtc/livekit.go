package rtc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/twitchtv/twirp"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The LiveKit authorization service of MatrixRTC (MSC4195, in the shape
// element-hq/lk-jwt-service serves it): a call member hands it an OpenID
// token of its homeserver and the call (Matrix room, slot, member) and gets
// a LiveKit access token (a JWT) for the SFU this server runs. The LiveKit
// room name and participant identity are the pseudonymous hashes MSC4195
// defines, so the SFU never sees Matrix IDs.
//
// Users of this server and of rtc_full_access_servers have full access:
// the service creates the LiveKit room (over LiveKit's RoomService API)
// and their token may create it too. Anyone else is restricted: they may
// join a LiveKit room that exists (a call someone with full access
// started), and are refused when it does not. Everyone must be joined to
// the Matrix room, as this server sees it.

// LegacySlotID is the slot of calls started through the legacy /sfu/get
// (one call per room).
const LegacySlotID = "m.call#ROOM"

// liveKitTokenTTL is how long a minted access token lets its holder join.
// LiveKit refreshes the token of a connected participant itself, so this
// only bounds how long a token leaked before use stays good.
const liveKitTokenTTL = 15 * time.Minute

// LiveKit room timeouts of rooms the service creates (as lk-jwt-service):
// kept 5 minutes if nobody joins, 20 seconds after the last one leaves.
const (
	liveKitEmptyTimeout     = 5 * 60
	liveKitDepartureTimeout = 20
)

// LiveKitOptions configure the authorization service.
type LiveKitOptions struct {
	// ServerName is this homeserver's name.
	ServerName string
	// URL is the SFU's WebSocket URL as clients reach it (ws:// or wss://).
	URL string
	// APIKey and APISecret sign access tokens and RoomService calls.
	APIKey, APISecret string
	// FullAccessServers are other homeservers whose users have full access.
	FullAccessServers []string
	// HTTPClient calls the SFU's RoomService; nil: a 10-second client.
	HTTPClient *http.Client
}

// RemoteOpenID exchanges an OpenID token at another homeserver. The
// federation package implements it (rtc never imports the API layers).
type RemoteOpenID interface {
	// OpenIDUserInfo asks server's GET /_matrix/federation/v1/openid/userinfo
	// whose token it is and returns that user ID, checked to be on server.
	// The error never contains the token.
	OpenIDUserInfo(ctx context.Context, server, token string) (userID string, err error)
}

// LiveKit is the authorization service.
type LiveKit struct {
	opts   LiveKitOptions
	db     *storage.DB
	rooms  *rooms.Rooms
	remote RemoteOpenID
	log    *slog.Logger
	rs     livekit.RoomService
	full   map[string]bool
	// delayed takes delegated delayed leave events (delegation.go).
	delayed *Delayed
	w       watches
}

// NewLiveKit returns the authorization service; remote may be nil (only
// this server's users can then be verified).
func NewLiveKit(db *storage.DB, rs *rooms.Rooms, remote RemoteOpenID, opts LiveKitOptions, log *slog.Logger) *LiveKit {
	full := map[string]bool{opts.ServerName: true}
	for _, s := range opts.FullAccessServers {
		full[s] = true
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	l := &LiveKit{opts: opts, db: db, rooms: rs, remote: remote, log: log, full: full,
		rs: livekit.NewRoomServiceJSONClient(liveKitHTTPURL(opts.URL), client)}
	l.w.ctx, l.w.cancel = context.WithCancel(context.Background())
	l.w.byID = map[string]*watchEntry{}
	return l
}

// URL is the SFU's WebSocket URL.
func (l *LiveKit) URL() string { return l.opts.URL }

// liveKitHTTPURL is the SFU's HTTP(S) base URL for its API.
func liveKitHTTPURL(ws string) string {
	u, err := url.Parse(ws)
	if err != nil {
		return ws
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	}
	return u.String()
}

// OpenIDToken is the OpenID token a client got from its homeserver
// (POST /user/{userId}/openid/request_token).
type OpenIDToken struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	MatrixServerName string `json:"matrix_server_name"`
	ExpiresIn        int64  `json:"expires_in"`
}

// Member is the member field of the client's m.rtc.member event.
type Member struct {
	ID              string `json:"id"`
	ClaimedUserID   string `json:"claimed_user_id"`
	ClaimedDeviceID string `json:"claimed_device_id"`
}

// TokenRequest is the body of POST /get_token (MSC4195).
type TokenRequest struct {
	RoomID      string      `json:"room_id"`
	SlotID      string      `json:"slot_id"`
	OpenIDToken OpenIDToken `json:"openid_token"`
	Member      Member      `json:"member"`
	// Delegation asks the service to keep a delayed leave event going
	// while the member is connected (delegation.go).
	Delegation
}

// LegacyTokenRequest is the body of POST /sfu/get (lk-jwt-service's
// endpoint before MSC4195).
type LegacyTokenRequest struct {
	Room        string      `json:"room"`
	OpenIDToken OpenIDToken `json:"openid_token"`
	DeviceID    string      `json:"device_id"`
	Delegation
}

// Token is the answer: where the SFU is and the access token for it.
type Token struct {
	URL string `json:"url"`
	JWT string `json:"jwt"`
}

// notAuthorised is every verification failure's answer: MSC4195 asks not
// to tell which check failed (whether a user, device or room exists).
func notAuthorised() error {
	return mxhttp.Unauthorized("The request could not be authorised")
}

// GetToken answers POST /get_token.
func (l *LiveKit) GetToken(ctx context.Context, req TokenRequest) (*Token, error) {
	if req.RoomID == "" || req.SlotID == "" {
		return nil, mxhttp.BadJSON("The request body is missing room_id or slot_id")
	}
	if req.Member.ID == "" || req.Member.ClaimedUserID == "" || req.Member.ClaimedDeviceID == "" {
		return nil, mxhttp.BadJSON("The request body's member is missing id, claimed_user_id or claimed_device_id")
	}
	userID, err := l.verify(ctx, req.OpenIDToken, req.Member.ClaimedUserID, req.Member.ClaimedDeviceID)
	if err != nil {
		return nil, err
	}
	return l.mintDelegating(ctx, userID, req.RoomID, req.SlotID, Identity(userID, req.Member.ClaimedDeviceID, req.Member.ID), req.Delegation)
}

// GetLegacyToken answers POST /sfu/get: one call per room (slot
// m.call#ROOM), and the identity "<user ID>:<device ID>".
func (l *LiveKit) GetLegacyToken(ctx context.Context, req LegacyTokenRequest) (*Token, error) {
	if req.Room == "" || req.DeviceID == "" {
		return nil, mxhttp.BadJSON("The request body is missing room or device_id")
	}
	userID, err := l.verify(ctx, req.OpenIDToken, "", req.DeviceID)
	if err != nil {
		return nil, err
	}
	return l.mintDelegating(ctx, userID, req.Room, LegacySlotID, userID+":"+req.DeviceID, req.Delegation)
}

// mintDelegating is mint, checking a requested delegation first and
// starting it once the token is minted.
func (l *LiveKit) mintDelegating(ctx context.Context, userID, roomID, slotID, identity string, d Delegation) (*Token, error) {
	if !d.requested() {
		return l.mint(ctx, userID, roomID, slotID, identity)
	}
	row, err := l.checkDelegation(ctx, userID, d)
	if err != nil {
		return nil, err
	}
	tok, err := l.mint(ctx, userID, roomID, slotID, identity)
	if err != nil {
		return nil, err
	}
	if err := l.watch(row, RoomAlias(roomID, slotID), identity, d); err != nil {
		return nil, err
	}
	return tok, nil
}

// verify checks an OpenID token (at this server's store, or at the token's
// server over federation) and returns its user, who must be claimedUser
// when that is set. A local user's claimed device must be one of theirs.
func (l *LiveKit) verify(ctx context.Context, tok OpenIDToken, claimedUser, claimedDevice string) (string, error) {
	if tok.AccessToken == "" || tok.MatrixServerName == "" {
		return "", mxhttp.BadJSON("The request body's openid_token is missing access_token or matrix_server_name")
	}
	var userID string
	if tok.MatrixServerName == l.opts.ServerName {
		u, err := storage.OpenIDTokenUser(ctx, l.db.Read(), tok.AccessToken, time.Now().UnixMilli())
		if errors.Is(err, storage.ErrNotFound) {
			l.log.Info("livekit: unknown or expired OpenID token", "server", tok.MatrixServerName)
			return "", notAuthorised()
		}
		if err != nil {
			return "", err
		}
		userID = u
	} else {
		if l.remote == nil {
			return "", notAuthorised()
		}
		u, err := l.remote.OpenIDUserInfo(ctx, tok.MatrixServerName, tok.AccessToken)
		if err != nil {
			l.log.Info("livekit: OpenID token not confirmed by its server", "server", tok.MatrixServerName, "err", err)
			return "", notAuthorised()
		}
		if serverOf(u) != tok.MatrixServerName {
			l.log.Warn("livekit: OpenID user is not on the token's server", "server", tok.MatrixServerName, "user_id", u)
			return "", notAuthorised()
		}
		userID = u
	}
	if claimedUser != "" && claimedUser != userID {
		l.log.Warn("livekit: claimed user is not the OpenID token's", "claimed_user_id", claimedUser, "user_id", userID)
		return "", notAuthorised()
	}
	if serverOf(userID) == l.opts.ServerName {
		if _, err := l.db.GetDevice(ctx, userID, claimedDevice); err != nil {
			if errors.Is(err, storage.ErrNotFound) {
				l.log.Warn("livekit: claimed device is not the user's", "user_id", userID, "device_id", claimedDevice)
				return "", notAuthorised()
			}
			return "", err
		}
	}
	return userID, nil
}

// mint checks the user is joined to the Matrix room, makes sure the
// LiveKit room exists (full access) or refuses (restricted, the room does
// not exist), and signs the access token.
func (l *LiveKit) mint(ctx context.Context, userID, roomID, slotID, identity string) (*Token, error) {
	if !strings.HasPrefix(roomID, "!") {
		return nil, mxhttp.BadJSON("room_id is not a room ID")
	}
	m, _, err := l.rooms.MembershipOf(ctx, roomID, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil || m != spec.Join {
		l.log.Info("livekit: user not joined to the room", "user_id", userID, "room_id", roomID)
		return nil, mxhttp.Forbidden("The request could not be authorised")
	}
	full := l.full[serverOf(userID)]
	alias := RoomAlias(roomID, slotID)
	if full {
		if err := l.createRoom(ctx, alias); err != nil {
			l.log.Error("livekit: creating the room on the SFU", "room", alias, "err", err)
			return nil, &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: "Unable to create the room on the SFU"}
		}
	} else {
		exists, err := l.roomExists(ctx, alias)
		if err != nil {
			l.log.Error("livekit: looking up the room on the SFU", "room", alias, "err", err)
			return nil, &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: "Unable to reach the SFU"}
		}
		if !exists {
			l.log.Info("livekit: restricted user, no such call on the SFU", "user_id", userID, "room", alias)
			return nil, mxhttp.Forbidden("No call is running in this room on this server")
		}
	}
	jwt, err := l.accessToken(alias, identity, full)
	if err != nil {
		return nil, err
	}
	access := "restricted"
	if full {
		access = "full"
	}
	l.log.Info("livekit: access token issued", "user_id", userID, "room_id", roomID, "slot_id", slotID,
		"livekit_room", alias, "livekit_identity", identity, "access", access)
	return &Token{URL: l.opts.URL, JWT: jwt}, nil
}

// accessToken signs a participant's access token for room.
func (l *LiveKit) accessToken(room, identity string, full bool) (string, error) {
	grant := &auth.VideoGrant{RoomJoin: true, RoomCreate: full, Room: room}
	grant.SetCanPublish(true)
	grant.SetCanSubscribe(true)
	grant.SetCanPublishData(true)
	grant.SetCanUpdateOwnMetadata(true)
	return auth.NewAccessToken(l.opts.APIKey, l.opts.APISecret).
		SetVideoGrant(grant).SetIdentity(identity).SetValidFor(liveKitTokenTTL).ToJWT()
}

// serviceContext carries the service's own short-lived token for a
// RoomService call with grant.
func (l *LiveKit) serviceContext(ctx context.Context, grant *auth.VideoGrant) (context.Context, error) {
	jwt, err := auth.NewAccessToken(l.opts.APIKey, l.opts.APISecret).SetVideoGrant(grant).SetValidFor(time.Minute).ToJWT()
	if err != nil {
		return nil, err
	}
	h := make(http.Header)
	h.Set("Authorization", "Bearer "+jwt)
	return twirp.WithHTTPRequestHeaders(ctx, h)
}

// createRoom creates the LiveKit room, or finds it already there.
func (l *LiveKit) createRoom(ctx context.Context, room string) error {
	ctx, err := l.serviceContext(ctx, &auth.VideoGrant{RoomCreate: true})
	if err != nil {
		return err
	}
	_, err = l.rs.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: room,
		EmptyTimeout: liveKitEmptyTimeout, DepartureTimeout: liveKitDepartureTimeout})
	return err
}

// roomExists asks the SFU whether the LiveKit room exists.
func (l *LiveKit) roomExists(ctx context.Context, room string) (bool, error) {
	ctx, err := l.serviceContext(ctx, &auth.VideoGrant{RoomList: true})
	if err != nil {
		return false, err
	}
	res, err := l.rs.ListRooms(ctx, &livekit.ListRoomsRequest{Names: []string{room}})
	if err != nil {
		return false, err
	}
	for _, r := range res.GetRooms() {
		if r.GetName() == room {
			return true, nil
		}
	}
	return false, nil
}

// RoomAlias is the LiveKit room of a MatrixRTC slot (MSC4195): the
// unpadded base64 of the SHA-256 of the canonical JSON [room_id, slot_id].
func RoomAlias(roomID, slotID string) string {
	return hashStrings(roomID, slotID)
}

// Identity is a member's pseudonymous LiveKit participant identity
// (MSC4195): the hash of [user_id, claimed_device_id, member.id].
func Identity(userID, deviceID, memberID string) string {
	return hashStrings(userID, deviceID, memberID)
}

// hashStrings hashes the canonical JSON of an array of strings. Go's
// encoding escapes <, > and & (canonical JSON does not), so it is turned
// off.
func hashStrings(ss ...string) string {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ss); err != nil {
		panic(fmt.Sprintf("encoding strings: %v", err)) // cannot happen
	}
	sum := sha256.Sum256([]byte(strings.TrimSuffix(b.String(), "\n")))
	return base64.RawStdEncoding.EncodeToString(sum[:])
}

// serverOf is the server name of a user ID.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}
