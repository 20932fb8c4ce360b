package e2ee

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
)

var canonicalSeeds = []string{
	`{"user_id":"@alice:example.org","device_id":"JLAFKJWSCS","algorithms":["m.olm.v1.curve25519-aes-sha2","m.megolm.v1.aes-sha2"],` +
		`"keys":{"curve25519:JLAFKJWSCS":"3C5BFWi2Y8MaVvjM8M22DBmh24PmgR0nPvJOIArzgyI","ed25519:JLAFKJWSCS":"lEuiRJBit0IG6nUf5pUzWTUEsRVVe/HJkoKuEww9ULI"},` +
		`"signatures":{"@alice:example.org":{"ed25519:JLAFKJWSCS":"dSO80A01XiigH3uBiDVx/EjzaoycHcjq9lfQX0uWsqxl2giMIiSPR8a4d291W1ihKJL/a+myXS367WT6NAIcBA"}},"unsigned":{"device_display_name":"Alice's mobile phone"}}`,
	`{"key":"zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs","signatures":{"@alice:example.com":{"ed25519:JLAFKJWSCS":"FLWxXqGbwrb8SM3Y795eB6OA8bwBcoMZFXBqnTn58AYWZSqiD45tlBVcDa2L7RwdKXebW/VzDlnfVJ+9jok1Bw"}}}`,
	`{"b":1,"a":[3,2,{"d":null,"c":true}],"\u00e9":"\u2028","e":-0,"f":1e3}`,
	`{ "one" : 1 , "two" : "Two" }`,
	`{"a":"\u0000\u001f\"\\/"}`,
	`{"日本語":"日本語","本":2}`,
	`"plain string"`, `[1,[2,[3]]]`, `{}`, `[]`, `null`,
}

// FuzzCanonicalJSON checks the canonical JSON encoding the server stores
// keys in (canonicalJSON, through parseSigned and parseKeyMap): for any
// valid JSON it accepts, the output is valid JSON, canonicalising it again
// changes nothing, and it means what the input means (same values once
// decoded, when the input has no duplicate keys); it refuses only objects
// with keys gomatrixserverlib.CanonicalJSON cannot write.
func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range canonicalSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		out, err := canonicalJSON(in)
		if err != nil {
			var v any
			if json.Unmarshal(in, &v) == nil && plainKeys(v) {
				t.Fatalf("refused %q: %v", in, err)
			}
			return
		}
		checkCanonical(t, in, out)
		if len(bytes.TrimSpace(in)) > 0 && bytes.TrimSpace(in)[0] == '{' {
			if o, err := parseSigned(in, "fuzz"); err == nil {
				checkCanonical(t, nil, o.canonical)
			}
			var m map[string]json.RawMessage
			if json.Unmarshal(in, &m) == nil {
				ks, err := parseKeyMap(m, "fuzz")
				if err == nil {
					for _, k := range ks {
						checkCanonical(t, nil, []byte(k.json))
					}
				}
			}
		}
	})
}

func checkCanonical(t *testing.T, in, out []byte) {
	t.Helper()
	if !json.Valid(out) {
		t.Fatalf("canonical form of %q is not JSON: %q", in, out)
	}
	again, err := gomatrixserverlib.CanonicalJSON(out)
	if err != nil || !bytes.Equal(again, out) {
		t.Fatalf("canonicalising is not idempotent: %q then %q (%v)", out, again, err)
	}
	if in == nil || hasDuplicateKeys(in) {
		return
	}
	a, b := decodeAny(t, in), decodeAny(t, out)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("canonical form changes the value: %q means %#v, %q means %#v", in, a, out, b)
	}
}

func decodeAny(t *testing.T, b []byte) any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decoding %q: %v", b, err)
	}
	return normalizeNumbers(v)
}

// normalizeNumbers compares numbers by value: canonical JSON may write
// 1e3 differently from its input.
func normalizeNumbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = normalizeNumbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalizeNumbers(e)
		}
	case json.Number:
		if f, err := x.Float64(); err == nil {
			return f
		}
	}
	return v
}

// hasDuplicateKeys reports whether some object in valid JSON b repeats a
// key; which of the values wins is up to the decoder then.
func hasDuplicateKeys(b []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	type frame struct {
		obj    bool
		keys   map[string]bool
		expKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		top := func() *frame {
			if len(stack) == 0 {
				return nil
			}
			return stack[len(stack)-1]
		}
		if fr := top(); fr != nil && fr.obj && fr.expKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if p := top(); p != nil && p.obj {
					p.expKey = true
				}
				continue
			}
			k := tok.(string)
			if fr.keys[k] {
				return true
			}
			fr.keys[k] = true
			fr.expKey = false
			continue
		}
		switch d, _ := tok.(json.Delim); d {
		case '{':
			stack = append(stack, &frame{obj: true, keys: map[string]bool{}, expKey: true})
			continue
		case '[':
			stack = append(stack, &frame{})
			continue
		case '}', ']':
			stack = stack[:len(stack)-1]
		}
		if p := top(); p != nil && p.obj {
			p.expKey = true
		}
	}
}
