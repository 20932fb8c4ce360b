package oauth

import (
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// The rendezvous API of sign-in with QR (MSC4388, the channel that
// matrix-js-sdk and Element X use in place of MSC4108's): a payload of at
// most 4096 bytes that two devices take turns replacing, each write naming
// the sequence token it last saw. The devices encrypt what they put there;
// the server only keeps it for a few minutes.
const (
	rendezvousPrefix   = "/_matrix/client/unstable/io.element.msc4388/rendezvous"
	rendezvousLifetime = 5 * time.Minute // the MSC's maximum
	rendezvousMaxData  = 4096
	// Devices poll about once a second; the limit is per address.
	rendezvousRate, rendezvousBurst = 5.0, 30
)

// errConcurrentWrite is the MSC's M_CONCURRENT_WRITE, unstable name.
func errConcurrentWrite() *mxhttp.Error {
	return &mxhttp.Error{Status: http.StatusConflict, ErrCode: "IO_ELEMENT_MSC4388_CONCURRENT_WRITE",
		Message: "The rendezvous payload changed since your sequence_token"}
}

func (a *API) rendezvousLimit(r *http.Request) error {
	if ok, wait := a.rendezvousIP.Allow(clientIP(r)); !ok {
		ms := wait.Milliseconds() + 1
		return mxhttp.LimitExceeded("Too many rendezvous requests; retry in %d ms", ms).With("retry_after_ms", ms)
	}
	return nil
}

// creator is the user allowed to create a session: creating needs an
// access token (the MSC's recommended default), so a rendezvous is always
// begun by a signed-in device of this server.
func (a *API) creator(r *http.Request) (accounts.Caller, bool, error) {
	if _, ok := accounts.AccessToken(r); !ok {
		return accounts.Caller{}, false, nil
	}
	c, err := a.accounts.Authenticate(r)
	return c, err == nil, err
}

// GET .../rendezvous: whether the caller may create sessions.
func (a *API) rendezvousDiscover(r *http.Request) (any, error) {
	if err := a.rendezvousLimit(r); err != nil {
		return nil, err
	}
	_, ok, err := a.creator(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"create_available": ok}, nil
}

type rendezvousBody struct {
	Data          *string `json:"data"`
	SequenceToken *string `json:"sequence_token"`
}

func readRendezvousBody(r *http.Request, needToken bool) (rendezvousBody, error) {
	var b rendezvousBody
	if err := mxhttp.ReadJSON(r, &b); err != nil {
		return b, err
	}
	if b.Data == nil || needToken && b.SequenceToken == nil {
		return b, mxhttp.BadJSON("data and sequence_token are required")
	}
	if len(*b.Data) > rendezvousMaxData {
		return b, mxhttp.TooLarge("data is over %d bytes", rendezvousMaxData)
	}
	return b, nil
}

// POST .../rendezvous: a new session with its first payload.
func (a *API) rendezvousCreate(r *http.Request) (any, error) {
	if err := a.rendezvousLimit(r); err != nil {
		return nil, err
	}
	_, ok, err := a.creator(r)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.Forbidden("Sign in to create a rendezvous session")
	}
	b, err := readRendezvousBody(r, false)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	rv := storage.Rendezvous{ID: accounts.NewToken(""), Data: *b.Data, SequenceToken: accounts.NewToken(""),
		ExpiresTS: now.Add(rendezvousLifetime).UnixMilli()}
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertRendezvous(r.Context(), tx, rv, now.UnixMilli())
	}); err != nil {
		return nil, err
	}
	return map[string]any{"id": rv.ID, "sequence_token": rv.SequenceToken, "expires_in_ms": rendezvousLifetime.Milliseconds()}, nil
}

func rendezvousGone() error {
	return mxhttp.NotFound("No such rendezvous session (it may have expired)")
}

// GET .../rendezvous/{rendezvousId}: the payload and its sequence token.
// A browser's top-level navigation is refused, so a payload can never be
// shown as a page of this server.
func (a *API) rendezvousRead(r *http.Request) (any, error) {
	if err := a.rendezvousLimit(r); err != nil {
		return nil, err
	}
	if r.Header.Get("Sec-Fetch-Mode") == "navigate" || r.Header.Get("Sec-Fetch-Dest") == "document" {
		return nil, mxhttp.Forbidden("Rendezvous sessions are not web pages")
	}
	now := time.Now()
	rv, err := storage.GetRendezvous(r.Context(), a.db.Read(), chi.URLParam(r, "rendezvousId"), now.UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, rendezvousGone()
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"data": rv.Data, "sequence_token": rv.SequenceToken, "expires_in_ms": rv.ExpiresTS - now.UnixMilli()}, nil
}

// PUT .../rendezvous/{rendezvousId}: compare-and-swap on the sequence
// token; resending the current payload is a successful retry.
func (a *API) rendezvousWrite(r *http.Request) (any, error) {
	if err := a.rendezvousLimit(r); err != nil {
		return nil, err
	}
	b, err := readRendezvousBody(r, true)
	if err != nil {
		return nil, err
	}
	id, now := chi.URLParam(r, "rendezvousId"), time.Now().UnixMilli()
	next := accounts.NewToken("")
	var current string
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		swapped, err := storage.SwapRendezvous(r.Context(), tx, id, *b.SequenceToken, next, *b.Data, now)
		if err != nil || swapped {
			current = next
			return err
		}
		rv, err := storage.GetRendezvous(r.Context(), tx, id, now)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return rendezvousGone()
		case err != nil:
			return err
		case rv.Data != *b.Data:
			return errConcurrentWrite()
		}
		current = rv.SequenceToken
		return nil
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"sequence_token": current}, nil
}

// DELETE .../rendezvous/{rendezvousId}: cancel.
func (a *API) rendezvousDelete(r *http.Request) (any, error) {
	if err := a.rendezvousLimit(r); err != nil {
		return nil, err
	}
	var deleted bool
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		var err error
		deleted, err = storage.DeleteRendezvous(r.Context(), tx, chi.URLParam(r, "rendezvousId"), time.Now().UnixMilli())
		return err
	})
	if err == nil && !deleted {
		err = rendezvousGone()
	}
	return nil, err
}
