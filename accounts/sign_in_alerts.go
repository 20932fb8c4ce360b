package accounts

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/hearth-matrix/hearth/storage"
)

// SignInAlertsType is the global account data with which a user turns
// their sign-in alerts off, {"enabled": false}; the client API (any
// client may set it) and the account page both write it.
const SignInAlertsType = "org.hearth.sign_in_alerts"

// SignInAlertsOn reads the user's choice: on unless their account data
// says {"enabled": false}.
func (a *Accounts) SignInAlertsOn(ctx context.Context, userID string) (bool, error) {
	d, err := a.DB.GetAccountData(ctx, userID, "", SignInAlertsType)
	if errors.Is(err, storage.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var c struct {
		Enabled *bool `json:"enabled"`
	}
	if json.Unmarshal(d.Content, &c) != nil || c.Enabled == nil {
		return true, nil
	}
	return *c.Enabled, nil
}

// SetSignInAlerts stores the user's choice and returns the account-data
// stream position to wake their syncs with.
func (a *Accounts) SetSignInAlerts(ctx context.Context, userID string, on bool) (int64, error) {
	content, _ := json.Marshal(map[string]bool{"enabled": on})
	return a.DB.PutAccountData(ctx, userID, "", SignInAlertsType, content)
}
