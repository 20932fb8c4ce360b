package config

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// field is one option reached by reflection, so that the YAML key, the
// environment variable and the flag of an option can never drift apart.
type field struct {
	key, env string
	v        reflect.Value
}

func fields(c *Config) []field {
	rv := reflect.ValueOf(c).Elem()
	rt := rv.Type()
	out := make([]field, 0, rt.NumField())
	for i := 0; i < rt.NumField(); i++ {
		sf := rt.Field(i)
		out = append(out, field{key: sf.Tag.Get("yaml"), env: sf.Tag.Get("env"), v: rv.Field(i)})
	}
	return out
}

// Keys lists every config-file key, in declaration order.
func Keys() []string {
	var c Config
	var keys []string
	for _, f := range fields(&c) {
		keys = append(keys, f.key)
	}
	return keys
}

// EnvName returns the environment variable for a config key.
func EnvName(key string) string {
	var c Config
	for _, f := range fields(&c) {
		if f.key == key {
			return f.env
		}
	}
	return ""
}

// IsBool reports whether an option is a boolean (a flag that needs no value).
func IsBool(key string) bool {
	var c Config
	for _, f := range fields(&c) {
		if f.key == key {
			return f.v.Kind() == reflect.Bool
		}
	}
	return false
}

func (f field) set(s string) error {
	// Structured options (sso_providers) parse themselves.
	if u, ok := f.v.Addr().Interface().(encoding.TextUnmarshaler); ok {
		return u.UnmarshalText([]byte(s))
	}
	switch f.v.Kind() {
	case reflect.String:
		f.v.SetString(s)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		f.v.SetBool(b)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an integer", s)
		}
		f.v.SetInt(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		f.v.SetFloat(x)
	case reflect.Slice:
		// Lists come comma-separated from the environment and flags.
		var parts []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		f.v.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported option type %s", f.v.Kind())
	}
	return nil
}
