package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"unicode/utf8"
)

// WriteJSON writes a JSON response with the given status.
func WriteJSON(w http.ResponseWriter, status int, body any) {
	b, err := json.Marshal(body)
	if err != nil {
		slog.Error("encoding response", "err", err)
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// WriteError writes err as a Matrix error. Errors that are not Matrix errors
// are logged (with the request id) and reported as a bare 500.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	me := AsError(err)
	if me.Status >= 500 {
		Logger(r).Error("request failed", "err", err)
	}
	WriteJSON(w, me.Status, me)
}

// ReadJSON decodes the request body into v, mapping failures to the spec's
// errors: a body over the limit is M_TOO_LARGE, malformed JSON M_NOT_JSON,
// JSON of the wrong shape M_BAD_JSON.
func ReadJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// ReadOptionalJSON is ReadJSON for endpoints whose body may be left out
// entirely (user-interactive auth endpoints are often first called without
// one): an empty body leaves v untouched.
func ReadOptionalJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return DecodeJSON(body, v)
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, TooLarge("Request body is larger than %d bytes", mbe.Limit)
		}
		return nil, NotJSON("Could not read the request body")
	}
	return body, nil
}

// DecodeJSON decodes body into v with ReadJSON's error mapping.
func DecodeJSON(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return NotJSON("Request body is empty; expected a JSON object")
	}
	if !json.Valid(body) || !utf8.Valid(body) {
		return NotJSON("Request body is not valid JSON (UTF-8)")
	}
	if body[0] != '{' {
		return BadJSON("Request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return BadJSON("Field %q has the wrong type: expected %s", te.Field, te.Type)
		}
		return BadJSON("Request body has the wrong shape: %v", err)
	}
	return nil
}

// MaxJSONDepth is how deeply objects and arrays may nest in event JSON we
// accept. gomatrixserverlib's canonical JSON and its checks take time
// that grows faster than the square of the depth (seconds for one 20 KB
// event nested 10,000 deep), and other servers refuse far less deep JSON.
const MaxJSONDepth = 128

// JSONDepth returns how deeply objects and arrays nest in JSON b (b need
// not be valid; brackets inside strings do not count).
func JSONDepth(b []byte) int {
	depth, max, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
			if depth > max {
				max = depth
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return max
}

// HasLoneSurrogate reports whether a string in JSON b holds a \u escape of
// half a UTF-16 surrogate pair without its other half. Such a string is
// no Unicode text: decoders replace it with U+FFFD and gomatrixserverlib's
// canonical JSON drops it, so an event holding one would not say what was
// sent, nor hash alike on other servers.
func HasLoneSurrogate(b []byte) bool {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range b[i+2 : i+6] {
			switch {
			case c >= '0' && c <= '9':
				r = r<<4 | rune(c-'0')
			case c >= 'a' && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case c >= 'A' && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			inString = !inString
		case inString && b[i] == '\\':
			r, ok := hex4(i)
			if !ok {
				i++ // a two-character escape
				continue
			}
			switch {
			case r >= 0xD800 && r < 0xDC00:
				if lo, ok := hex4(i + 6); ok && lo >= 0xDC00 && lo < 0xE000 {
					i += 11
					continue
				}
				return true
			case r >= 0xDC00 && r < 0xE000:
				return true
			}
			i += 5
		}
	}
	return false
}
