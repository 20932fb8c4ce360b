package clientapi

import (
	"context"
	"slices"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/storage"
)

// ssoFlow is the m.login.sso flow of GET /login (client-server API, Client
// login via SSO). /login/sso/redirect (package oauth) opens Hearth's own
// sign-in page, which offers the password and every configured provider,
// so the flow is there even with no provider; identity_providers lists
// the providers for clients that show a button each. Hearth serves the
// OAuth 2.0 API, so the flow is preferred for OAuth 2.0 aware clients
// (v1.18, oauth_aware_preferred).
func ssoFlow(providers config.SSOProviders) map[string]any {
	idps := []map[string]any{}
	for _, sp := range providers {
		idp := map[string]any{"id": sp.ID, "name": sp.Name}
		if sp.Brand != "" {
			idp["brand"] = sp.Brand
		}
		if sp.Icon != "" {
			idp["icon"] = sp.Icon
		}
		idps = append(idps, idp)
	}
	return map[string]any{"type": "m.login.sso", "identity_providers": idps, "oauth_aware_preferred": true}
}

// withSignInStages fits a requirement that re-checks the caller to the
// ways this server lets them sign in. The m.login.sso stage (client-server
// API, SSO during User-Interactive Authentication) is another way to pass
// a password requirement, for a user whose account is linked to a
// configured provider: an account made through SSO has no password. The
// stage is passed on its fallback page, /auth/m.login.sso/fallback/web
// (package oauth), by signing in again with the provider. With password
// login off the password stage is not offered (as Synapse does without
// password re-authentication), so a flow needing it goes: what is left
// may be no flow at all, and the request then cannot be authorised (the
// account page still serves such a user).
func (a *API) withSignInStages(ctx context.Context, req uiaRequirement) (uiaRequirement, error) {
	if req.userID == "" || !offersStage(req.flows, stagePassword) {
		return req, nil
	}
	flows := req.flows
	if !a.conf().PasswordLogin {
		flows = nil
		for _, f := range req.flows {
			if !slices.Contains(f.Stages, stagePassword) {
				flows = append(flows, f)
			}
		}
	}
	if len(a.conf().SSOProviders) > 0 && !offersStage(flows, stageSSO) {
		links, err := storage.SSOLinksOfUser(ctx, a.db.Read(), req.userID)
		if err != nil {
			return req, err
		}
		for _, l := range links {
			if _, ok := a.conf().SSOProviders.Provider(l.IdPID); ok {
				flows = append(append([]uiaFlow(nil), flows...), uiaFlow{Stages: []string{stageSSO}})
				break
			}
		}
	}
	if flows == nil {
		flows = []uiaFlow{} // "flows": [], never null
	}
	req.flows = flows
	return req, nil
}
