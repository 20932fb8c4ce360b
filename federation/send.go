package federation

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// PUT /_matrix/federation/v1/send/{txnId} (server-server API, Transactions).
//
// A transaction is processed once: the response is stored under (origin,
// txnId) and a repeat gets it back unprocessed. Each PDU is handed to the
// room core on its own and gets its own result, so one bad PDU never fails
// the others; EDUs are dispatched by type and have no result.
func (a *API) send(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	origin := Origin(ctx)
	txnID := pathParam(r, "txnId")
	unlock := a.txnLocks.lock(string(origin) + "\x00" + txnID)
	defer unlock()
	if resp, err := storage.InboundTxn(ctx, a.db.Read(), string(origin), txnID); err == nil {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp)
		return
	} else if !errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, err)
		return
	}
	var body struct {
		PDUs []json.RawMessage       `json:"pdus"`
		EDUs []gomatrixserverlib.EDU `json:"edus"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if len(body.PDUs) > maxTxnPDUs || len(body.EDUs) > maxTxnEDUs {
		mxhttp.WriteError(w, r, mxhttp.BadJSON("A transaction holds at most %d PDUs and %d EDUs", maxTxnPDUs, maxTxnEDUs))
		return
	}
	results := map[string]fclient.PDUResult{}
	for _, raw := range body.PDUs {
		if id, res, ok := a.receivePDU(ctx, origin, raw); ok {
			results[id] = res
		}
	}
	for _, edu := range body.EDUs {
		a.receiveEDU(ctx, origin, edu)
	}
	resp, err := json.Marshal(fclient.RespSend{PDUs: results})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.PutInboundTxn(ctx, tx, string(origin), txnID, resp) }); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp)
}

// receivePDU hands one PDU to the room core and returns its result. PDUs
// whose event ID cannot be worked out (no room_id, a room we do not know,
// JSON that does not parse for the room's version) are dropped without a
// result, as there is no ID to report it under.
func (a *API) receivePDU(ctx context.Context, origin spec.ServerName, raw json.RawMessage) (string, fclient.PDUResult, bool) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if mxhttp.JSONDepth(raw) > mxhttp.MaxJSONDepth {
		a.log.Info("dropping PDU nested too deeply", "origin", origin)
		return "", fclient.PDUResult{}, false
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		a.log.Info("dropping PDU without room_id", "origin", origin)
		return "", fclient.PDUResult{}, false
	}
	ver, err := a.rooms.Version(ctx, head.RoomID)
	if err != nil {
		a.log.Info("dropping PDU for an unknown room", "origin", origin, "room", head.RoomID, "err", err)
		return "", fclient.PDUResult{}, false
	}
	pdu, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil {
		a.log.Info("dropping malformed PDU", "origin", origin, "room", head.RoomID, "err", err)
		return "", fclient.PDUResult{}, false
	}
	id := pdu.EventID()
	if !a.ACLAllows(ctx, head.RoomID, origin) {
		return id, fclient.PDUResult{Error: "Server " + string(origin) + " is denied by the room's server ACL"}, true
	}
	if err := a.rooms.ReceivePDU(ctx, origin, head.RoomID, raw); err != nil {
		return id, fclient.PDUResult{Error: err.Error()}, true
	}
	return id, fclient.PDUResult{}, true
}
