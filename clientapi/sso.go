package clientapi

import "github.com/hearth-matrix/hearth/config"

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
