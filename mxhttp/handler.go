package mxhttp

import (
	"encoding/json"
	"net/http"
)

// Handlers of every API return a response body and an error instead of
// writing to the http.ResponseWriter themselves; Respond is the one place
// that turns the pair into HTTP, so no handler writes its own error.

// Stream is a response that writes itself: media bytes, multipart bodies,
// anything that is not one JSON value.
type Stream func(w http.ResponseWriter, r *http.Request)

// Respond writes a handler's result. A non-nil err is written as a Matrix
// error (see WriteError). A Stream writes itself, a json.RawMessage is
// written as it is (stored JSON is not decoded and encoded again), nil is
// the empty object most write endpoints answer, and anything else is
// encoded as JSON with 200.
func Respond(w http.ResponseWriter, r *http.Request, body any, err error) {
	if err != nil {
		WriteError(w, r, err)
		return
	}
	switch b := body.(type) {
	case Stream:
		b(w, r)
	case json.RawMessage:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	case nil:
		WriteJSON(w, http.StatusOK, struct{}{})
	default:
		WriteJSON(w, http.StatusOK, b)
	}
}

// Serve is the adapter between HTTP and a handler of the client-side APIs
// (client, admin): authenticate gives the caller, or the error written
// instead of running h; h gives the body or an error, which Respond writes.
func Serve[C any](authenticate func(*http.Request) (C, error), h func(*http.Request, C) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := authenticate(r)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		body, err := h(r, c)
		Respond(w, r, body, err)
	}
}
