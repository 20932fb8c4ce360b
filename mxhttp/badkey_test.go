package mxhttp

import "testing"

func TestBadObjectKey(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"\\\"","b\\\"":1}`:       `"b\\\""`,
		`{"\\\"0":0}`:                  `"\\\"0"`,
		`{"x":{"y\n":1}}`:              `"y\n"`,
		`{"x":[{"ok":1},{"t\tab":1}]}`: `"t\tab"`,
		`{"c\u001f":1}`:                `"c\u001f"`,
		`{"q\u0022":1}`:                `"q\u0022"`,
		`{"é\u00e9\/":"\\\"\n"}`:       ``,
		`["\\\"",{"k":"\\"}]`:          ``,
		`{"a":{"b":["\"",{"\\":1}]}}`:  `"\\"`,
	} {
		got, bad := BadObjectKey([]byte(in))
		if got != want || bad != (want != "") {
			t.Errorf("BadObjectKey(%s) = %q %v, want %q", in, got, bad, want)
		}
	}
}
