package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/pushrules"
	"github.com/hearth-matrix/hearth/storage"
)

// Push rules (client-server API, Push Notifications: Push Rules API;
// pushrules.yaml). Only the user's changes are stored, in the m.push_rules
// account data row, so every change moves m.push_rules forward in the
// account-data stream and sync sends the rendered rules.

// loadPushRules returns the user's stored push rule changes.
func (a *API) loadPushRules(r *http.Request, userID string) (pushrules.UserRules, error) {
	d, err := a.db.GetAccountData(r.Context(), userID, "", pushRulesType)
	u := pushrules.UserRules{ThreadRules: a.conf().ThreadSubscriptionPushRules}
	if errors.Is(err, storage.ErrNotFound) {
		return u, nil
	}
	if err != nil {
		return u, err
	}
	u, err = pushrules.ParseUserRules(d.Content)
	u.ThreadRules = a.conf().ThreadSubscriptionPushRules
	return u, err
}

// pushRulesContent is the m.push_rules account data content sync sends:
// the user's rules rendered over the defaults.
func (a *API) pushRulesContent(ctx context.Context, userID string) (any, error) {
	d, err := a.db.GetAccountData(ctx, userID, "", pushRulesType)
	u := pushrules.UserRules{}
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, err
	default:
		if u, err = pushrules.ParseUserRules(d.Content); err != nil {
			return nil, err
		}
	}
	u.ThreadRules = a.conf().ThreadSubscriptionPushRules
	return map[string]pushrules.Ruleset{"global": u.Render(userID)}, nil
}

// changePushRules applies change to the caller's push rules in one
// transaction and answers {} (or change's error).
func (a *API) changePushRules(r *http.Request, userID string, change func(u *pushrules.UserRules) error) (any, error) {
	pos, err := a.db.UpdateAccountData(r.Context(), userID, "", pushRulesType, func(old []byte, _ bool) ([]byte, error) {
		u, err := pushrules.ParseUserRules(old)
		if err != nil {
			return nil, err
		}
		if err := change(&u); err != nil {
			return nil, err
		}
		return json.Marshal(u)
	})
	if err != nil {
		return nil, err
	}
	a.push.RulesChanged(userID)
	a.accountDataChanged(userID, pos)
	return struct{}{}, nil
}

// ruleTarget reads the kind and rule ID of a /pushrules/global/{kind}/{ruleId} path.
func ruleTarget(r *http.Request) (pushrules.Kind, string, error) {
	k, ok := pushrules.ParseKind(pathParam(r, "kind"))
	if !ok {
		return "", "", mxhttp.InvalidParam("Unknown push rule kind %q", pathParam(r, "kind"))
	}
	return k, pathParam(r, "ruleId"), nil
}

// GET /_matrix/client/v3/pushrules/ (all rulesets; only global exists).
func (a *API) getPushRules(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.loadPushRules(r, c.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]pushrules.Ruleset{"global": u.Render(c.UserID)}, nil
}

// GET /_matrix/client/v3/pushrules/global/.
func (a *API) getGlobalPushRules(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.loadPushRules(r, c.UserID)
	if err != nil {
		return nil, err
	}
	return u.Render(c.UserID), nil
}

// getPushRule loads the rule a path names, for the three GET endpoints.
func (a *API) getPushRule(r *http.Request, c accounts.Caller) (pushrules.Rule, error) {
	k, id, err := ruleTarget(r)
	if err != nil {
		// Reading a rule of a kind Hearth does not have (such as MSC4306's
		// postcontent) finds no rule: 404, which clients take as "absent".
		return pushrules.Rule{}, mxhttp.NotFound("No push rule of kind %q", pathParam(r, "kind"))
	}
	u, err := a.loadPushRules(r, c.UserID)
	if err != nil {
		return pushrules.Rule{}, err
	}
	return u.Get(c.UserID, k, id)
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
func (a *API) getPushRuleHandler(r *http.Request, c accounts.Caller) (any, error) {
	rule, err := a.getPushRule(r, c)
	if err != nil {
		return nil, err
	}
	return rule, nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled.
func (a *API) getPushRuleEnabled(r *http.Request, c accounts.Caller) (any, error) {
	rule, err := a.getPushRule(r, c)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"enabled": rule.Enabled}, nil
}

// GET /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions.
func (a *API) getPushRuleActions(r *http.Request, c accounts.Caller) (any, error) {
	rule, err := a.getPushRule(r, c)
	if err != nil {
		return nil, err
	}
	return map[string][]pushrules.Action{"actions": rule.Actions}, nil
}

// readActions decodes a body with an "actions" list; a malformed action is
// 400 M_INVALID_PARAM.
func readActions(r *http.Request, v any) error {
	err := mxhttp.ReadJSON(r, v)
	var me *mxhttp.Error
	if errors.As(err, &me) && me.ErrCode == "M_BAD_JSON" {
		return mxhttp.InvalidParam("Invalid push rule: %s", me.Message)
	}
	return err
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}?before=&after=.
func (a *API) putPushRule(r *http.Request, c accounts.Caller) (any, error) {
	k, id, err := ruleTarget(r)
	if err == nil {
		err = pushrules.ValidateRuleID(k, id)
	}
	if err != nil {
		return nil, err
	}
	var nr pushrules.NewRule
	if err := readActions(r, &nr); err != nil {
		return nil, err
	}
	q := r.URL.Query()
	return a.changePushRules(r, c.UserID, func(u *pushrules.UserRules) error {
		return u.Put(k, id, nr, q.Get("before"), q.Get("after"))
	})
}

// DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}.
func (a *API) deletePushRule(r *http.Request, c accounts.Caller) (any, error) {
	k, id, err := ruleTarget(r)
	if err != nil {
		return nil, err
	}
	return a.changePushRules(r, c.UserID, func(u *pushrules.UserRules) error { return u.Delete(k, id) })
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled.
func (a *API) putPushRuleEnabled(r *http.Request, c accounts.Caller) (any, error) {
	k, id, err := ruleTarget(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Enabled *bool `json:"enabled"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Enabled == nil {
		return nil, mxhttp.MissingParam("enabled is required")
	}
	return a.changePushRules(r, c.UserID, func(u *pushrules.UserRules) error { return u.SetEnabled(k, id, *body.Enabled) })
}

// PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions.
func (a *API) putPushRuleActions(r *http.Request, c accounts.Caller) (any, error) {
	k, id, err := ruleTarget(r)
	if err != nil {
		return nil, err
	}
	var body struct {
		Actions *[]pushrules.Action `json:"actions"`
	}
	if err := readActions(r, &body); err != nil {
		return nil, err
	}
	if body.Actions == nil {
		return nil, mxhttp.MissingParam("actions is required")
	}
	return a.changePushRules(r, c.UserID, func(u *pushrules.UserRules) error { return u.SetActions(k, id, *body.Actions) })
}
