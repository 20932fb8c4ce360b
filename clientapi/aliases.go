package clientapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Room aliases (client-server API, Room aliases).

// parseAlias checks the alias grammar (#localpart:server) and returns the
// server part.
func parseAlias(alias string) (server string, err error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	if !strings.HasPrefix(alias, "#") || !ok || local == "" || server == "" || len(alias) > 255 || strings.ContainsAny(local, " \t\n") {
		return "", mxhttp.InvalidParam("%q is not a valid room alias", alias)
	}
	return server, nil
}

// PUT /directory/room/{roomAlias}
func (a *API) putAlias(r *http.Request, c accounts.Caller) (any, error) {
	alias := pathParam(r, "roomAlias")
	var body struct {
		RoomID string `json:"room_id"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	server, err := parseAlias(alias)
	if err != nil {
		return nil, err
	}
	if server != a.conf().ServerName {
		return nil, mxhttp.InvalidParam("Aliases can only be created on this server (%s)", a.conf().ServerName)
	}
	if body.RoomID == "" {
		return nil, mxhttp.MissingParam("room_id is required")
	}
	if err := a.checkAliasNamespace(c, alias); err != nil {
		return nil, err
	}
	if _, err := a.rooms.Version(r.Context(), body.RoomID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", body.RoomID)
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertAlias(r.Context(), tx, alias, body.RoomID, c.UserID)
	})
	if errors.Is(err, storage.ErrConflict) {
		return nil, &mxhttp.Error{Status: http.StatusConflict, ErrCode: "M_UNKNOWN", Message: "Room alias " + alias + " already exists"}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// GET /directory/room/{roomAlias}
func (a *API) getAlias(r *http.Request, _ accounts.Caller) (any, error) {
	alias := pathParam(r, "roomAlias")
	if _, err := parseAlias(alias); err != nil {
		return nil, err
	}
	roomID, servers, err := a.resolveAlias(r.Context(), alias)
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

// resolveAlias looks a local alias up in the store and asks the alias's
// server about a remote one.
func (a *API) resolveAlias(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	server, err := parseAlias(alias)
	if err != nil {
		return "", nil, err
	}
	if server != a.conf().ServerName {
		if a.fed == nil {
			return "", nil, mxhttp.NotFound("Room alias %s not found", alias)
		}
		return a.fed.QueryAlias(ctx, alias)
	}
	roomID, _, err = storage.ResolveAlias(ctx, a.db.Read(), alias)
	if errors.Is(err, storage.ErrNotFound) && a.appsvc.QueryAlias(ctx, alias) {
		// An application service made the alias on being asked.
		roomID, _, err = storage.ResolveAlias(ctx, a.db.Read(), alias)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil, mxhttp.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return "", nil, err
	}
	// Ourselves first, then the other servers in the room (while its
	// state is partial, those the send_join answer named), as the
	// federation query answers.
	servers = []string{a.conf().ServerName}
	inRoom, err := a.rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	for _, s := range inRoom {
		if string(s) != a.conf().ServerName {
			servers = append(servers, string(s))
		}
	}
	return roomID, servers, nil
}

// DELETE /directory/room/{roomAlias}: the alias's creator, a server admin,
// or a room member allowed to set m.room.canonical_alias may delete it.
func (a *API) deleteAlias(r *http.Request, c accounts.Caller) (any, error) {
	alias := pathParam(r, "roomAlias")
	if _, err := parseAlias(alias); err != nil {
		return nil, err
	}
	roomID, creator, err := storage.ResolveAlias(r.Context(), a.db.Read(), alias)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	allowed := creator == c.UserID
	if !allowed {
		if u, err := a.db.GetUser(r.Context(), c.UserID); err == nil && u.IsAdmin {
			allowed = true
		}
	}
	if !allowed {
		if pl, err := a.rooms.PowerLevels(r.Context(), roomID); err == nil {
			m, _, _ := a.rooms.MembershipOf(r.Context(), roomID, c.UserID)
			allowed = m == spec.Join && pl.UserLevel(spec.SenderID(c.UserID)) >= pl.EventLevel(spec.MRoomCanonicalAlias, true)
		}
	}
	if !allowed {
		return nil, mxhttp.Forbidden("You may not delete the alias %s", alias)
	}
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return storage.DeleteAlias(r.Context(), tx, alias) }); err != nil {
		return nil, err
	}
	a.dropFromCanonicalAlias(r, roomID, alias, c.UserID)
	return map[string]any{}, nil
}

// dropFromCanonicalAlias removes a deleted alias from the room's
// m.room.canonical_alias, as the spec asks servers to; if the user may not
// send that state, the event stays as it is.
func (a *API) dropFromCanonicalAlias(r *http.Request, roomID, alias, userID string) {
	id, err := a.rooms.CurrentStateID(r.Context(), roomID, storage.StateKey{Type: spec.MRoomCanonicalAlias})
	if err != nil || id == "" {
		return
	}
	ev, err := a.rooms.Event(r.Context(), id)
	if err != nil {
		return
	}
	var content map[string]any
	if json.Unmarshal(ev.PDU.Content(), &content) != nil {
		return
	}
	changed := false
	if content["alias"] == alias {
		delete(content, "alias")
		changed = true
	}
	if alts, ok := content["alt_aliases"].([]any); ok {
		kept := []any{}
		for _, x := range alts {
			if x != alias {
				kept = append(kept, x)
			}
		}
		if len(kept) != len(alts) {
			content["alt_aliases"] = kept
			changed = true
		}
	}
	if !changed {
		return
	}
	b, _ := json.Marshal(content)
	empty := ""
	if _, err := a.rooms.Send(r.Context(), roomID, rooms.Proto{Sender: userID, Type: spec.MRoomCanonicalAlias, StateKey: &empty, Content: b}); err != nil {
		a.log.Info("could not update m.room.canonical_alias after deleting an alias", "room", roomID, "err", err)
	}
}

// GET /rooms/{roomId}/aliases: for members, or anyone in world_readable rooms.
func (a *API) roomAliases(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	// A server admin may list any room's aliases, as on Synapse (synadm's
	// "user membership" does so for rooms the admin is not in).
	if u, err := a.db.GetUser(r.Context(), c.UserID); err == nil && u.IsAdmin {
		if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("Unknown room %s", roomID)
		} else if err != nil {
			return nil, err
		}
		return a.listAliases(r, roomID)
	}
	st, err := a.visibleStateKeys(r, roomID, c.UserID, storage.StateKey{Type: spec.MRoomHistoryVisibility})
	if err != nil {
		return nil, err
	}
	if m, _, _ := a.rooms.MembershipOf(r.Context(), roomID, c.UserID); m != spec.Join {
		visible := false
		if id, ok := st[storage.StateKey{Type: spec.MRoomHistoryVisibility}]; ok {
			if ev, err := a.rooms.Event(r.Context(), id); err == nil {
				hv, _ := ev.PDU.HistoryVisibility()
				visible = hv == "world_readable"
			}
		}
		if !visible {
			return nil, mxhttp.Forbidden("You are not in room %s", roomID)
		}
	}
	return a.listAliases(r, roomID)
}

func (a *API) listAliases(r *http.Request, roomID string) (any, error) {
	aliases, err := storage.AliasesOfRoom(r.Context(), a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	if aliases == nil {
		aliases = []string{}
	}
	return map[string]any{"aliases": aliases}, nil
}

// checkCanonicalAlias enforces the spec's rule for m.room.canonical_alias:
// alias and alt_aliases must be valid and, for local aliases, point to this
// room; otherwise 400 M_BAD_ALIAS.
func (a *API) checkCanonicalAlias(r *http.Request, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return mxhttp.BadJSON("Invalid m.room.canonical_alias content: %v", err)
	}
	check := func(alias string) error {
		server, err := parseAlias(alias)
		if err != nil {
			return err // malformed: M_INVALID_PARAM; M_BAD_ALIAS is for aliases that do not point here
		}
		if server != a.conf().ServerName {
			return nil // remote aliases cannot be checked without federation
		}
		target, _, err := storage.ResolveAlias(r.Context(), a.db.Read(), alias)
		if err != nil || target != roomID {
			return &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_BAD_ALIAS", Message: "Alias " + alias + " does not point to this room"}
		}
		return nil
	}
	if c.Alias != nil && *c.Alias != "" {
		if err := check(*c.Alias); err != nil {
			return err
		}
	}
	for _, alt := range c.AltAliases {
		if err := check(alt); err != nil {
			return err
		}
	}
	return nil
}
