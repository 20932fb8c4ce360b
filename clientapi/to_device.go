package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Send-to-device messaging (client-server API, Send-to-Device messaging).
// Delivery to the device happens in /sync.

// PUT /sendToDevice/{eventType}/{txnId}
func (a *API) sendToDevice(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Messages == nil {
		return nil, mxhttp.MissingParam("messages is required")
	}
	err := a.e2ee.SendToDevice(r.Context(), c.UserID, c.DeviceID, chi.URLParam(r, "eventType"), chi.URLParam(r, "txnId"), req.Messages)
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
