// Package mxhttp holds the HTTP conventions every Matrix API shares: the
// error body {"errcode","error"}, JSON request and response bodies, CORS,
// request ids and logging.
package mxhttp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error is a Matrix error: an HTTP status plus the JSON body the spec
// defines (client-server API, Standard error response).
type Error struct {
	Status  int            `json:"-"`
	ErrCode string         `json:"errcode"`
	Message string         `json:"error"`
	Extra   map[string]any `json:"-"` // e.g. retry_after_ms, soft_logout
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.ErrCode, e.Message) }

// MarshalJSON merges Extra into the body. An Error without an ErrCode is a
// bare body of Extra fields: the first 401 of user-interactive
// authentication carries flows and a session but no error.
func (e *Error) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, 2+len(e.Extra))
	for k, v := range e.Extra {
		m[k] = v
	}
	if e.ErrCode != "" {
		m["errcode"], m["error"] = e.ErrCode, e.Message
	}
	return json.Marshal(m)
}

// With returns a copy of e with an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

func newErr(status int, code string) func(format string, a ...any) *Error {
	return func(format string, a ...any) *Error {
		return &Error{Status: status, ErrCode: code, Message: fmt.Sprintf(format, a...)}
	}
}

// Constructors for the spec's common errors, with the status the spec gives.
var (
	Forbidden          = newErr(http.StatusForbidden, "M_FORBIDDEN")
	UnknownToken       = newErr(http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	MissingToken       = newErr(http.StatusUnauthorized, "M_MISSING_TOKEN")
	BadJSON            = newErr(http.StatusBadRequest, "M_BAD_JSON")
	NotJSON            = newErr(http.StatusBadRequest, "M_NOT_JSON")
	NotFound           = newErr(http.StatusNotFound, "M_NOT_FOUND")
	LimitExceeded      = newErr(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	Unrecognized       = newErr(http.StatusNotFound, "M_UNRECOGNIZED")
	Unknown            = newErr(http.StatusBadRequest, "M_UNKNOWN")
	MissingParam       = newErr(http.StatusBadRequest, "M_MISSING_PARAM")
	InvalidParam       = newErr(http.StatusBadRequest, "M_INVALID_PARAM")
	TooLarge           = newErr(http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	UserInUse          = newErr(http.StatusBadRequest, "M_USER_IN_USE")
	InvalidUsername    = newErr(http.StatusBadRequest, "M_INVALID_USERNAME")
	Exclusive          = newErr(http.StatusBadRequest, "M_EXCLUSIVE")
	UserDeactivated    = newErr(http.StatusForbidden, "M_USER_DEACTIVATED")
	WeakPassword       = newErr(http.StatusBadRequest, "M_WEAK_PASSWORD")
	UnsupportedVersion = newErr(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	GuestAccess        = newErr(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
	ProfileTooLarge    = newErr(http.StatusBadRequest, "M_PROFILE_TOO_LARGE")
	KeyTooLarge        = newErr(http.StatusBadRequest, "M_KEY_TOO_LARGE")
	Internal           = newErr(http.StatusInternalServerError, "M_UNKNOWN")
	// UnknownPos is sliding sync's (MSC4186) answer to a pos the server
	// does not know or has expired.
	UnknownPos = newErr(http.StatusBadRequest, "M_UNKNOWN_POS")
	// UserLocked answers a locked account (v1.12), with soft_logout.
	UserLocked = newErr(http.StatusUnauthorized, "M_USER_LOCKED")
	// UserLimitExceeded answers a request beyond a per-user limit
	// (v1.18); see UserLimit.
	UserLimitExceeded = newErr(http.StatusForbidden, "M_USER_LIMIT_EXCEEDED")
	// UserSuspended answers an action a suspended account may not take
	// (v1.13).
	UserSuspended = newErr(http.StatusForbidden, "M_USER_SUSPENDED")
	// Unauthorized is the federation API's answer to a missing or bad
	// X-Matrix signature.
	Unauthorized = newErr(http.StatusUnauthorized, "M_UNAUTHORIZED")
	// Thread subscriptions (MSC4306, unstable prefixed codes): an
	// automatic subscription's cause event is not in the thread, or came
	// before the user unsubscribed.
	NotInThread               = newErr(http.StatusBadRequest, "IO.ELEMENT.MSC4306.M_NOT_IN_THREAD")
	ConflictingUnsubscription = newErr(http.StatusConflict, "IO.ELEMENT.MSC4306.M_CONFLICTING_UNSUBSCRIPTION")
)

// WithStatus returns a copy of e with another HTTP status, for the few
// places the spec pairs an errcode with an unusual status (405 M_BAD_JSON
// for server-managed account data types).
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

// AsError turns any error into a Matrix error: Matrix errors pass through,
// anything else is an internal error whose details stay in the log.
func AsError(err error) *Error {
	var me *Error
	if errors.As(err, &me) {
		return me
	}
	return Internal("Internal server error")
}

// End-to-end encryption errors.
var (
	InvalidSignature     = newErr(http.StatusBadRequest, "M_INVALID_SIGNATURE")
	WrongRoomKeysVersion = newErr(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
)

// Room errors.
var (
	RoomInUse    = newErr(http.StatusBadRequest, "M_ROOM_IN_USE")
	InvalidState = newErr(http.StatusBadRequest, "M_INVALID_ROOM_STATE")
	// InviteBlocked answers an invite the invitee's invite permission
	// config refuses (v1.18).
	InviteBlocked = newErr(http.StatusForbidden, "M_INVITE_BLOCKED")
)

// UserLimit is M_USER_LIMIT_EXCEEDED (v1.18) with the info_uri the spec
// requires; can_upgrade is left out (false): Hearth's limits are set by
// the operator, not by an account tier.
func UserLimit(infoURI, format string, a ...any) *Error {
	return UserLimitExceeded(format, a...).With("info_uri", infoURI)
}
