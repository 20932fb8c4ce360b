package clientapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Client Config (client-server API, account_data module; account-data.yaml):
// global and per-room account data. Each change moves the entry forward in
// the account-data stream that sync reads (storage/account_data.go).

// pushRulesType is the account data type of the push rules. Its stored row
// holds the user's push rule changes (package pushrules), which are
// rendered on the way out.
const pushRulesType = "m.push_rules"

// serverManagedTypes are the account data types clients may read but not
// set: the server maintains them (account_data module, Server Behaviour).
var serverManagedTypes = map[string]bool{"m.fully_read": true, pushRulesType: true}

// accountDataTarget reads and checks the user, room and type of an account
// data request: only the user themself, and a room ID for room data.
func accountDataTarget(r *http.Request, c accounts.Caller) (userID, roomID, dataType string, err error) {
	userID, roomID, dataType = pathParam(r, "userId"), pathParam(r, "roomId"), pathParam(r, "type")
	if err := requireSelf(c, userID, "access account data"); err != nil {
		return "", "", "", err
	}
	if isRoomRoute(r) && (!strings.HasPrefix(roomID, "!") || len(roomID) < 2) {
		return "", "", "", mxhttp.InvalidParam("%q is not a valid room ID", roomID)
	}
	return userID, roomID, dataType, nil
}

// isRoomRoute reports whether the request matched a per-room account data route.
func isRoomRoute(r *http.Request) bool {
	rc := chi.RouteContext(r.Context())
	return rc != nil && strings.Contains(rc.RoutePattern(), "{roomId}")
}

// PUT /_matrix/client/v3/user/{userId}/account_data/{type} and
// PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *API) putAccountData(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	if serverManagedTypes[dataType] {
		return nil, mxhttp.BadJSON("Cannot set %s through the account data API", dataType).WithStatus(http.StatusMethodNotAllowed)
	}
	var content json.RawMessage
	if err := mxhttp.ReadJSON(r, &content); err != nil {
		return nil, err
	}
	compact, err := compactJSON(content)
	if err != nil {
		return nil, err
	}
	pos, err := a.db.PutAccountData(r.Context(), userID, roomID, dataType, compact)
	if err != nil {
		return nil, err
	}
	a.accountDataChanged(userID, pos)
	return struct{}{}, nil
}

// DELETE /_matrix/client/unstable/org.matrix.msc3391/user/{userId}/account_data/{type}
// and its per-room form (MSC3391): the entry reads as absent from now on and
// incremental syncs carry it with empty content. A PUT of {} does the same.
func (a *API) deleteAccountData(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	if serverManagedTypes[dataType] {
		return nil, mxhttp.BadJSON("Cannot delete %s through the account data API", dataType).WithStatus(http.StatusMethodNotAllowed)
	}
	var pos int64
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		pos, err = a.db.DeleteAccountDataTx(r.Context(), tx, userID, roomID, dataType)
		return err
	})
	if err != nil {
		return nil, err
	}
	if pos > 0 {
		a.accountDataChanged(userID, pos)
	}
	return struct{}{}, nil
}

// GET /_matrix/client/v3/user/{userId}/account_data/{type} and
// GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}.
func (a *API) getAccountData(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, dataType, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	if roomID == "" && dataType == pushRulesType {
		// Readable "as normal": the rendered rules, defaults included,
		// whether or not the user changed any.
		u, err := a.loadPushRules(r, userID)
		if err != nil {
			return nil, err
		}
		return map[string]pushrules.Ruleset{"global": u.Render(userID)}, nil
	}
	d, err := a.db.GetAccountData(r.Context(), userID, roomID, dataType)
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No account data of type %s", dataType)
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(d.Content), nil
}

// accountDataChanged wakes the user's syncs after a committed change.
func (a *API) accountDataChanged(userID string, pos int64) {
	a.notifier.Users([]string{userID}, syncstream.Position{AccountData: pos})
}
