package importdendrite

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/federation"
	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/storage"
)

// writeOldKeys carries global.old_private_keys as the old verify keys
// Hearth publishes (federation.OldKeysFile).
func writeOldKeys(c *dendriteConfig, dataDir string) error {
	if len(c.Global.OldPrivateKeys) == 0 {
		return nil
	}
	out, err := c.oldKeys()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dataDir, federation.OldKeysFile), b, 0o600)
}

// oldVerifyKeys adds the old keys' public halves to keys.
func (c *dendriteConfig) oldVerifyKeys(keys map[gomatrixserverlib.KeyID]ed25519.PublicKey) error {
	old, err := c.oldKeys()
	for id, k := range old {
		keys[id] = ed25519.PublicKey(k.Key)
	}
	return err
}

// oldKeys reads global.old_private_keys.
func (c *dendriteConfig) oldKeys() (map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey, error) {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	for _, o := range c.Global.OldPrivateKeys {
		var id gomatrixserverlib.KeyID
		var pub spec.Base64Bytes
		switch {
		case o.PrivateKey != "":
			k, err := readKey(c.path(o.PrivateKey))
			if err != nil {
				return nil, fmt.Errorf("old private key: %w", err)
			}
			id, pub = k.ID, k.PublicBase64()
		case o.PublicKey != "" && o.KeyID != "":
			if err := pub.Decode(o.PublicKey); err != nil {
				return nil, fmt.Errorf("old public key %s: %w", o.KeyID, err)
			}
			id = gomatrixserverlib.KeyID(o.KeyID)
		default:
			return nil, fmt.Errorf("an old_private_keys entry has neither private_key nor public_key and key_id")
		}
		if len(pub) != 32 || o.ExpiredAt == 0 {
			return nil, fmt.Errorf("old key %s needs a 32-byte key and expired_at", id)
		}
		out[id] = gomatrixserverlib.OldVerifyKey{VerifyKey: gomatrixserverlib.VerifyKey{Key: pub}, ExpiredTS: spec.Timestamp(o.ExpiredAt)}
	}
	return out, nil
}

func (im *importer) userID(localpart string) string { return "@" + localpart + ":" + im.server }

// local reports whether a row's server_name column is this server's (a
// Dendrite with virtual hosts keeps several; Hearth has one).
func (im *importer) local(serverName, what string) bool {
	if serverName == "" || serverName == im.server {
		return true
	}
	im.rep.notCarried("%s of virtual host %s: Hearth serves one server name", what, serverName)
	return false
}

func (im *importer) progress(table string) {
	t := im.rep.table(table)
	fmt.Fprintf(im.opts.Progress, "  %-45s %8d read %8d written\n", table, t.Read, t.Written)
}

// Dendrite's account types (1 is a plain user, 4 an application
// service's).
const (
	accountGuest = 2
	accountAdmin = 3
)

func (im *importer) importAccounts(ctx context.Context, tx *sql.Tx) error {
	t := im.rep.table("userapi_accounts")
	err := im.src.each(ctx, "userapi_accounts", `SELECT localpart, server_name, created_ts, password_hash, appservice_id, is_deactivated, account_type FROM userapi_accounts ORDER BY created_ts, localpart`,
		func(rows *sql.Rows) error {
			var localpart, server string
			var created int64
			var hash, appservice sql.NullString
			var deactivated sql.NullBool
			var typ int
			if err := rows.Scan(&localpart, &server, &created, &hash, &appservice, &deactivated, &typ); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "account "+localpart) {
				return nil
			}
			u := storage.User{UserID: im.userID(localpart), Localpart: localpart, PasswordHash: hash.String,
				IsAdmin: typ == accountAdmin, IsGuest: typ == accountGuest, Deactivated: deactivated.Bool, CreatedTS: created}
			// An application service's account (accountAppservice) is a
			// plain user in Hearth: the registration's namespaces say whose
			// it is.
			if err := storage.ImportUser(ctx, tx, u); err != nil {
				return err
			}
			// Every Hearth user has a profile row; userapi_profiles fills it.
			if err := storage.ImportProfile(ctx, tx, u.UserID, nil, nil); err != nil {
				return err
			}
			t.Written++
			return nil
		})
	if err != nil {
		return err
	}
	im.progress("userapi_accounts")

	t = im.rep.table("userapi_profiles")
	err = im.src.each(ctx, "userapi_profiles", `SELECT localpart, server_name, display_name, avatar_url FROM userapi_profiles`,
		func(rows *sql.Rows) error {
			var localpart, server string
			var name, avatar sql.NullString
			if err := rows.Scan(&localpart, &server, &name, &avatar); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "profile "+localpart) {
				return nil
			}
			t.Written++
			return storage.ImportProfile(ctx, tx, im.userID(localpart), nullable(name), nullable(avatar))
		})
	if err != nil {
		return err
	}
	im.progress("userapi_profiles")

	if err := im.importDevices(ctx, tx); err != nil {
		return err
	}
	if err := im.importAccountData(ctx, tx); err != nil {
		return err
	}

	t = im.rep.table("syncapi_filter")
	err = im.src.each(ctx, "syncapi_filter", `SELECT id, localpart, filter FROM syncapi_filter ORDER BY id`,
		func(rows *sql.Rows) error {
			var id int64
			var localpart, filter string
			if err := rows.Scan(&id, &localpart, &filter); err != nil {
				return err
			}
			t.Read++
			t.Written++
			return storage.ImportFilter(ctx, tx, id, im.userID(localpart), []byte(filter))
		})
	if err != nil {
		return err
	}
	im.progress("syncapi_filter")

	t = im.rep.table("userapi_registration_tokens")
	err = im.src.each(ctx, "userapi_registration_tokens", `SELECT token, pending, completed, uses_allowed, expiry_time FROM userapi_registration_tokens`,
		func(rows *sql.Rows) error {
			var tok storage.RegistrationToken
			var pending, completed, uses, expiry sql.NullInt64
			if err := rows.Scan(&tok.Token, &pending, &completed, &uses, &expiry); err != nil {
				return err
			}
			t.Read++
			tok.Pending, tok.Completed = pending.Int64, completed.Int64
			if uses.Valid {
				tok.UsesAllowed = &uses.Int64
			}
			if expiry.Valid {
				tok.ExpiryTime = &expiry.Int64
			}
			t.Written++
			return storage.InsertRegistrationToken(ctx, tx, tok)
		})
	if err != nil {
		return err
	}
	im.progress("userapi_registration_tokens")

	if err := im.importPushers(ctx, tx); err != nil {
		return err
	}

	t = im.rep.table("userapi_threepids")
	now := time.Now().UnixMilli()
	err = im.src.each(ctx, "userapi_threepids", `SELECT threepid, medium, localpart, server_name FROM userapi_threepids ORDER BY localpart`,
		func(rows *sql.Rows) error {
			var pid, medium, localpart, server string
			if err := rows.Scan(&pid, &medium, &localpart, &server); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "3PID of "+localpart) {
				return nil
			}
			if medium == "email" {
				pid = strings.ToLower(pid)
			}
			// Dendrite binds only validated identifiers and keeps no
			// times: both are the import's.
			err := storage.InsertThreePID(ctx, tx, storage.ThreePID{Medium: medium, Address: pid, UserID: im.userID(localpart), ValidatedTS: now, AddedTS: now})
			if errors.Is(err, storage.ErrConflict) {
				im.rep.notCarried("3PID %s %s of %s: bound twice", medium, pid, im.userID(localpart))
				return nil
			}
			if err == nil {
				t.Written++
			}
			return err
		})
	if err != nil {
		return err
	}
	im.progress("userapi_threepids")
	return nil
}

func nullable(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

// importDevices carries every device with its access token (hashed: Hearth
// stores no token in the clear), so every client stays logged in.
func (im *importer) importDevices(ctx context.Context, tx *sql.Tx) error {
	t := im.rep.table("userapi_devices")
	return im.withProgress("userapi_devices", im.src.each(ctx, "userapi_devices", `SELECT access_token, session_id, device_id, localpart, server_name, created_ts, display_name, last_seen_ts, ip
		FROM userapi_devices ORDER BY localpart, created_ts`,
		func(rows *sql.Rows) error {
			var token, deviceID, localpart, server string
			var session, created, lastSeen sql.NullInt64
			var name, ip sql.NullString
			if err := rows.Scan(&token, &session, &deviceID, &localpart, &server, &created, &name, &lastSeen, &ip); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "device "+deviceID+" of "+localpart) {
				return nil
			}
			userID := im.userID(localpart)
			d := storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: nullable(name), CreatedTS: created.Int64, LastSeenIP: nullable(ip)}
			if lastSeen.Valid {
				d.LastSeenTS = &lastSeen.Int64
			}
			if err := storage.ImportDevice(ctx, tx, d); err != nil {
				return err
			}
			if err := storage.InsertAccessToken(ctx, tx, storage.AccessToken{Token: token, UserID: userID, DeviceID: deviceID, CreatedTS: created.Int64}); err != nil {
				return err
			}
			if session.Valid {
				im.deviceOfSession[sessionKey{localpart, session.Int64}] = deviceID
			}
			t.Written++
			return nil
		}))
}

func (im *importer) withProgress(table string, err error) error {
	if err == nil {
		im.progress(table)
	}
	return err
}

// importAccountData carries account data at the stream positions the sync
// API gave it, so a client's saved sync token still points at the right
// place. m.push_rules is the rendered rule set in Dendrite and the user's
// changes to the defaults in Hearth: it is turned into those changes.
func (im *importer) importAccountData(ctx context.Context, tx *sql.Tx) error {
	type key struct{ user, room, typ string }
	pos := map[key]int64{}
	var maxPos int64
	err := im.src.each(ctx, "syncapi_account_data_type", `SELECT id, user_id, room_id, type FROM syncapi_account_data_type`,
		func(rows *sql.Rows) error {
			var id int64
			var k key
			if err := rows.Scan(&id, &k.user, &k.room, &k.typ); err != nil {
				return err
			}
			pos[k] = id
			maxPos = max(maxPos, id)
			return nil
		})
	if err != nil {
		return err
	}
	type entry struct {
		key
		content []byte
	}
	var entries []entry
	t := im.rep.table("userapi_account_datas")
	err = im.src.each(ctx, "userapi_account_datas", `SELECT localpart, server_name, room_id, type, content FROM userapi_account_datas`,
		func(rows *sql.Rows) error {
			var localpart, server, typ, content string
			var room sql.NullString
			if err := rows.Scan(&localpart, &server, &room, &typ, &content); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "account data of "+localpart) {
				return nil
			}
			entries = append(entries, entry{key{im.userID(localpart), room.String, typ}, []byte(content)})
			return nil
		})
	if err != nil {
		return err
	}
	// Entries the sync API never streamed go after the rest, in a stable order.
	sort.Slice(entries, func(i, j int) bool {
		a, b := entries[i].key, entries[j].key
		if a.user != b.user {
			return a.user < b.user
		}
		if a.room != b.room {
			return a.room < b.room
		}
		return a.typ < b.typ
	})
	for _, e := range entries {
		p, ok := pos[e.key]
		if !ok {
			maxPos++
			p = maxPos
		}
		content := e.content
		if e.typ == "m.push_rules" && e.room == "" {
			var err error
			if content, err = userPushRules(e.user, content); err != nil {
				im.rep.notCarried("push rules of %s: %v", e.user, err)
				continue
			}
		}
		if err := storage.ImportAccountData(ctx, tx, p, e.user, e.room, e.typ, content); err != nil {
			return err
		}
		t.Written++
	}
	im.progress("userapi_account_datas")
	return nil
}

// userPushRules turns Dendrite's stored rule set into Hearth's record of
// the user's changes.
func userPushRules(userID string, stored []byte) ([]byte, error) {
	var doc struct {
		Global pushrules.Ruleset `json:"global"`
	}
	if err := json.Unmarshal(stored, &doc); err != nil {
		return nil, err
	}
	u := pushrules.FromRendered(doc.Global, userID)
	return json.Marshal(u)
}

// importPushers carries pushers; Dendrite ties a pusher to a device by its
// session ID.
func (im *importer) importPushers(ctx context.Context, tx *sql.Tx) error {
	t := im.rep.table("userapi_pushers")
	var ps []storage.Pusher
	err := im.src.each(ctx, "userapi_pushers", `SELECT localpart, server_name, session_id, profile_tag, kind, app_id, app_display_name,
		device_display_name, pushkey, pushkey_ts_ms, lang, data FROM userapi_pushers ORDER BY id`,
		func(rows *sql.Rows) error {
			var localpart, server string
			var session sql.NullInt64
			var tag sql.NullString
			var p storage.Pusher
			if err := rows.Scan(&localpart, &server, &session, &tag, &p.Kind, &p.AppID, &p.AppDisplayName,
				&p.DeviceDisplayName, &p.PushKey, &p.PushKeyTS, &p.Lang, &p.Data); err != nil {
				return err
			}
			t.Read++
			if !im.local(server, "pusher of "+localpart) {
				return nil
			}
			p.UserID, p.ProfileTag = im.userID(localpart), tag.String
			if session.Valid {
				p.DeviceID = im.deviceOfSession[sessionKey{localpart, session.Int64}]
			}
			ps = append(ps, p)
			return nil
		})
	if err != nil {
		return err
	}
	for _, p := range ps {
		if err := storage.PutPusher(ctx, tx, p, true); err != nil {
			return err
		}
		t.Written++
	}
	im.progress("userapi_pushers")
	return nil
}
