package config

import (
	"reflect"
	"slices"
)

// reloadable are the keys a running server takes again from its config
// file on SIGHUP (docs/configuration.md, Reloading): what is read per
// request or per outbound call. Every other key needs a restart.
var reloadable = map[string]bool{
	"log_level":   true,
	"rate_limits": true, "rate_limit_login_per_second": true, "rate_limit_login_burst": true,
	"rate_limit_register_per_second": true, "rate_limit_register_burst": true,
	"rate_limit_message_per_second": true, "rate_limit_message_burst": true,
	"registration": true, "registration_shared_secret": true, "guest_access": true, "password_login": true,
	"turn_uris": true, "turn_shared_secret": true, "turn_user_lifetime": true,
	"livekit_url": true, "livekit_api_key": true, "livekit_api_secret": true, "livekit_api_secret_file": true,
	"rtc_full_access_servers": true,
	"well_known_client":       true, "well_known_server": true,
	"url_preview": true, "url_preview_allow_cidrs": true,
	"sign_in_alerts": true,
}

// Reloadable reports whether a change of key takes effect on SIGHUP.
func Reloadable(key string) bool { return reloadable[key] }

// ReloadableKeys lists the keys that take effect on SIGHUP, in
// declaration order.
func ReloadableKeys() []string {
	return slices.DeleteFunc(Keys(), func(k string) bool { return !reloadable[k] })
}

// Changed lists the keys whose values differ between a and b, in
// declaration order. An empty list and a missing one are the same.
func Changed(a, b Config) []string {
	fa, fb := fields(&a), fields(&b)
	var out []string
	for i := range fa {
		va, vb := fa[i].v, fb[i].v
		if va.Kind() == reflect.Slice && va.Len() == 0 && vb.Len() == 0 {
			continue
		}
		if !reflect.DeepEqual(va.Interface(), vb.Interface()) {
			out = append(out, fa[i].key)
		}
	}
	return out
}

// WithReloaded returns c with the reloadable keys taken from n: what a
// running server applies of a changed config file.
func (c Config) WithReloaded(n Config) Config {
	fc, fn := fields(&c), fields(&n)
	for i := range fc {
		if reloadable[fc[i].key] {
			fc[i].v.Set(fn[i].v)
		}
	}
	return c
}
