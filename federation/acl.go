package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/glob"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Server ACLs (client-server API, Server Access Control Lists; m.room.server_acl).

// checkACL is 403 M_FORBIDDEN for a server the room's ACL denies.
func (a *API) checkACL(ctx context.Context, roomID string, origin spec.ServerName) error {
	if !a.ACLAllows(ctx, roomID, origin) {
		return mxhttp.Forbidden("Server ACL denies %s", origin)
	}
	return nil
}

// ACLAllows reports whether serverName may take part in roomID under the
// room's current m.room.server_acl. A room without one, or one we do not
// know, allows everyone; so does an ACL we cannot read (logged), since
// only a well-formed event can deny.
func (a *API) ACLAllows(ctx context.Context, roomID string, serverName spec.ServerName) bool {
	// A point lookup: every request of a big room comes through here.
	id, err := a.rooms.CurrentStateID(ctx, roomID, storage.StateKey{Type: "m.room.server_acl"})
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			a.log.Warn("server ACL: loading room state", "room", roomID, "err", err)
		}
		return true
	}
	if id == "" {
		return true
	}
	ev, err := a.rooms.Event(ctx, id)
	if err != nil {
		a.log.Warn("server ACL: loading event", "room", roomID, "event", id, "err", err)
		return true
	}
	return aclAllows(ev.PDU.Content(), serverName)
}

// aclAllows applies an m.room.server_acl content to a server name, in the
// spec's order: IP literals, deny, allow, otherwise deny.
func aclAllows(content []byte, serverName spec.ServerName) bool {
	var acl struct {
		AllowIPLiterals json.RawMessage   `json:"allow_ip_literals"`
		Allow           []json.RawMessage `json:"allow"`
		Deny            []json.RawMessage `json:"deny"`
	}
	if err := json.Unmarshal(content, &acl); err != nil {
		// A content of the wrong shape: read what we can field by field.
		var loose map[string]json.RawMessage
		_ = json.Unmarshal(content, &loose)
		acl.AllowIPLiterals = loose["allow_ip_literals"]
		_ = json.Unmarshal(loose["allow"], &acl.Allow)
		_ = json.Unmarshal(loose["deny"], &acl.Deny)
	}
	host := hostOf(serverName)
	if string(acl.AllowIPLiterals) == "false" {
		bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if net.ParseIP(bare) != nil {
			return false
		}
	}
	if matchesAny(acl.Deny, host) {
		return false
	}
	return matchesAny(acl.Allow, host)
}

// hostOf drops the port of a server name (ACLs ignore ports).
func hostOf(serverName spec.ServerName) string {
	s := string(serverName)
	if strings.HasPrefix(s, "[") {
		if end := strings.Index(s, "]"); end >= 0 {
			return s[:end+1]
		}
		return s
	}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		return s[:i]
	}
	return s
}

// matchesAny reports whether host matches one of the string globs in
// patterns; entries that are not strings are ignored.
func matchesAny(patterns []json.RawMessage, host string) bool {
	for _, raw := range patterns {
		var p string
		if json.Unmarshal(raw, &p) != nil {
			continue
		}
		if glob.MatchFold(p, host) {
			return true
		}
	}
	return false
}
