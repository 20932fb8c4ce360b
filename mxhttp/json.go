package mxhttp

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
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
//
// A request that failed because its client went away (its context is
// cancelled, by the server when the connection closed, and err is that
// cancellation, e.g. a /sync whose query was cut short) is not a server
// failure: it is logged at debug level only and nothing is written — there
// is nobody to read an answer, and a made-up status would only be counted
// as a failure it was not. Common records it as 499 (nginx's "client closed
// request") in the access log and metrics; that status never goes on the
// wire. A body that broke off while the client is still there (a truncated
// upload, a malformed chunk) is its failure too: 400 M_UNKNOWN. A body
// that passed its limit makes any error 413 M_TOO_LARGE.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	if clientGone(r, err) {
		Logger(r).Debug("client went away", "err", err)
		if s := stateOf(r); s != nil {
			s.clientGone.Store(true)
		}
		return
	}
	if tooLarge := BodyTooLarge(r); tooLarge != nil {
		// The body passed its limit and was cut off there: whatever the
		// handler made of what it read (X-Matrix verification calls it
		// malformed), the answer is 413.
		err = tooLarge
	}
	var bre *BodyReadError
	if errors.As(err, &bre) {
		Logger(r).Debug("request body broke off", "err", err)
		err = Unknown("Could not read the request body")
	}
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

// readBody reads the body under the request's limit (Common's default or
// the route's LimitBody). encoding/json holds a whole value in memory
// before decoding it even when reading from a stream, so the limit is what
// bounds the memory a body takes; a larger Content-Length is refused before
// reading.
func readBody(r *http.Request) ([]byte, error) {
	body, err := ReadBody(r, 0)
	if err != nil {
		var me *Error
		if errors.As(err, &me) { // 413
			return nil, err
		}
		return nil, NotJSON("Could not read the request body")
	}
	return body, nil
}

// ReadRequiredField reads a JSON object body and returns its field name
// decoded as T: M_MISSING_PARAM when the field is absent or null,
// M_BAD_JSON when it has the wrong type. For bodies with one field that
// matters, such as /keys/query in both APIs.
func ReadRequiredField[T any](r *http.Request, name string) (T, error) {
	var zero T
	var fields map[string]json.RawMessage
	if err := ReadJSON(r, &fields); err != nil {
		return zero, err
	}
	raw, ok := fields[name]
	if !ok || string(raw) == "null" {
		return zero, MissingParam("%s is required", name)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return zero, BadJSON("Field %q has the wrong type: %v", name, err)
	}
	return v, nil
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

// BadObjectKey reports an object key in JSON b (valid JSON) that holds a
// quote, a backslash or a control character, and returns it as written.
// gomatrixserverlib's canonical JSON writes keys unescaped (values are
// fine), so such a key comes out changed or as invalid JSON: the event
// built from it would not say what was sent, or not parse at all.
func BadObjectKey(b []byte) (string, bool) {
	type frame struct{ object, expectKey bool }
	var stack []frame
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '{':
			stack = append(stack, frame{object: true, expectKey: true})
		case '[':
			stack = append(stack, frame{})
		case '}', ']':
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
		case '"':
			start := i
			bad := false
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] != '\\' || i+1 >= len(b) {
					continue
				}
				i++
				switch b[i] {
				case '"', '\\', 'b', 'f', 'n', 'r', 't':
					bad = true
				case 'u':
					if i+4 < len(b) {
						if v, err := strconv.ParseUint(string(b[i+1:i+5]), 16, 16); err == nil && (v < 0x20 || v == '"' || v == '\\') {
							bad = true
						}
					}
				}
			}
			if n := len(stack); n > 0 && stack[n-1].object && stack[n-1].expectKey {
				stack[n-1].expectKey = false
				if bad {
					return string(b[start:min(i+1, len(b))]), true
				}
			}
		}
	}
	return "", false
}
