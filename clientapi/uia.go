package clientapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// User-interactive authentication (client-server API, User-Interactive
// Authentication API). Sessions and their completed stages live in the
// database, so a session begun on one process can finish on another.
//
// An endpoint calls a.userInteractiveAuth with what it requires; on success
// it gets a uiaPassed, which it must consume inside the transaction that
// performs the request, so that one session authorises exactly one request
// (and a registration token counts exactly one use).

const (
	stagePassword          = "m.login.password"
	stageDummy             = "m.login.dummy"
	stageRegistrationToken = "m.login.registration_token"
	stageOAuth             = "m.oauth"
	stageSSO               = "m.login.sso" // passed on the fallback page (package oauth)
)

// uiaSessionLifetime bounds how long a client may take to finish a flow.
const uiaSessionLifetime = 30 * time.Minute

type uiaFlow struct {
	Stages []string `json:"stages"`
}

// uiaRequirement is what an endpoint demands.
type uiaRequirement struct {
	// action names the request a session authorises ("DELETE /devices/X"):
	// a session started for one request cannot authorise another.
	action string
	// userID is the authenticated caller; empty for /register. The password
	// stage must prove this user's password.
	userID string
	flows  []uiaFlow
	params map[string]any
	// emailPurpose is the validation-session purpose an
	// m.login.email.identity stage must have (threepid.go).
	emailPurpose string
}

// passwordFlows is the requirement of endpoints that re-check the caller's
// password: device deletion, password change, deactivation, login tokens,
// cross-signing key upload.
func passwordFlows(action, userID string) uiaRequirement {
	return uiaRequirement{action: action, userID: userID, flows: []uiaFlow{{Stages: []string{stagePassword}}}}
}

// uiaPassed is a completed session, to be consumed by the request it
// authorised.
type uiaPassed struct{ session string }

// consume deletes the session inside the request's transaction, turning a
// held registration token use into a completed one. If another request
// consumed the session first the transaction must fail.
func (p uiaPassed) consume(ctx context.Context, tx *sql.Tx) error {
	err := storage.ConsumeUIASession(ctx, tx, p.session)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.Forbidden("This authentication session has already been used or has expired")
	}
	return err
}

type uiaAuthDict struct {
	Type    string `json:"type"`
	Session string `json:"session"`
	Token   string `json:"token"` // m.login.registration_token
}

// userInteractiveAuth runs one step of UIA for a request whose body carried
// auth (nil when absent). It returns a uiaPassed once a flow is complete,
// or an error: the 401 challenge (flows, params, session, completed and,
// after a failed stage, errcode/error), or a plain Matrix error.
func (a *API) userInteractiveAuth(r *http.Request, req uiaRequirement, auth json.RawMessage) (uiaPassed, error) {
	ctx := r.Context()
	req, err := a.withSignInStages(ctx, req)
	if err != nil {
		return uiaPassed{}, err
	}
	var dict uiaAuthDict
	if len(auth) > 0 && string(auth) != "null" {
		if err := mxhttp.DecodeJSON(auth, &dict); err != nil {
			return uiaPassed{}, err
		}
	}
	var sess storage.UIASession
	if dict.Session == "" {
		var err error
		if sess, err = a.newUIASession(ctx, req); err != nil {
			return uiaPassed{}, err
		}
	} else {
		var err error
		sess, err = a.db.GetUIASession(ctx, dict.Session)
		if errors.Is(err, storage.ErrNotFound) || err == nil && sess.ExpiresTS < time.Now().UnixMilli() {
			return uiaPassed{}, mxhttp.Unknown("Unknown or expired session ID %q", dict.Session)
		}
		if err != nil {
			return uiaPassed{}, err
		}
		if sess.Action != req.action || sess.UserID != req.userID {
			return uiaPassed{}, mxhttp.Forbidden("This authentication session was started for a different request")
		}
	}
	// The m.oauth stage's auth dict has only the session (client-server
	// API, OAuth authentication); so has a retry after a stage passed
	// elsewhere (the SSO fallback page), which must not be taken for it.
	if dict.Type == "" && dict.Session != "" && offersStage(req.flows, stageOAuth) && !anyFlowCompleted(req.flows, sess.Completed) {
		dict.Type = stageOAuth
	}
	if dict.Type != "" && !slices.Contains(sess.Completed, dict.Type) {
		if !offersStage(req.flows, dict.Type) {
			// A failed attempt the client may follow with an offered stage:
			// 401 with the flows and M_FORBIDDEN (User-Interactive
			// Authentication API).
			if dict.Type == stagePassword && !a.conf().PasswordLogin {
				return uiaPassed{}, uiaChallenge(req, sess, mxhttp.Forbidden("Password authentication is turned off on this server"))
			}
			return uiaPassed{}, uiaChallenge(req, sess, mxhttp.Forbidden("Authentication type %q is not offered here", dict.Type))
		}
		if err := a.attemptStage(r, req, sess, dict, auth); err != nil {
			var me *mxhttp.Error
			if errors.As(err, &me) && me.Status == http.StatusUnauthorized {
				return uiaPassed{}, uiaChallenge(req, sess, me)
			}
			return uiaPassed{}, err
		}
		sess.Completed = append(sess.Completed, dict.Type)
	}
	if anyFlowCompleted(req.flows, sess.Completed) {
		return uiaPassed{session: sess.SessionID}, nil
	}
	return uiaPassed{}, uiaChallenge(req, sess, nil)
}

func anyFlowCompleted(flows []uiaFlow, completed []string) bool {
	for _, f := range flows {
		if allCompleted(f.Stages, completed) {
			return true
		}
	}
	return false
}

func (a *API) newUIASession(ctx context.Context, req uiaRequirement) (storage.UIASession, error) {
	flows, _ := json.Marshal(req.flows)
	params, _ := json.Marshal(req.paramsOrEmpty())
	now := time.Now()
	s := storage.UIASession{
		SessionID: accounts.NewToken(""), Action: req.action, UserID: req.userID,
		Flows: string(flows), Params: string(params), ExpiresTS: now.Add(uiaSessionLifetime).UnixMilli(),
	}
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		// Expired sessions are swept here, releasing registration token
		// uses they held, so no background job is needed.
		if err := storage.ExpireUIASessions(ctx, tx, now.UnixMilli()); err != nil {
			return err
		}
		return storage.InsertUIASession(ctx, tx, s, now.UnixMilli())
	})
	return s, err
}

// attemptStage checks one stage and records it as completed. A failed
// check is a 401 error (the client may retry the stage); other errors are
// returned as they are.
func (a *API) attemptStage(r *http.Request, req uiaRequirement, sess storage.UIASession, dict uiaAuthDict, raw json.RawMessage) error {
	ctx := r.Context()
	record := func(extra func(tx *sql.Tx) error) error {
		return a.db.WriteTx(ctx, func(tx *sql.Tx) error {
			if extra != nil {
				if err := extra(tx); err != nil {
					return err
				}
			}
			return storage.CompleteUIAStage(ctx, tx, sess.SessionID, dict.Type)
		})
	}
	switch dict.Type {
	case stageDummy:
		return record(nil)
	case stagePassword:
		pc, err := accounts.ParsePasswordCredentials(raw)
		if err != nil {
			return err
		}
		localpart, err := a.accounts.LoginLocalpart(ctx, pc)
		if err != nil {
			return asUIAFailure(err)
		}
		if err := a.limit(r, a.live().limits.loginUser, localpart); err != nil {
			return err
		}
		u, err := a.accounts.CheckPassword(ctx, localpart, pc.Password)
		if err != nil {
			return asUIAFailure(err)
		}
		if u.UserID != req.userID {
			// Right password, wrong account: not something a retry fixes.
			return mxhttp.Forbidden("The credentials given are not those of the user making the request")
		}
		return record(nil)
	case stageOAuth:
		// Passed when the user approved a cross-signing reset on the
		// account page since; the approval is used up here.
		errWait := &mxhttp.Error{Status: http.StatusUnauthorized, ErrCode: "M_FORBIDDEN", Message: "Approve the reset on your account page first"}
		return record(func(tx *sql.Tx) error {
			ok, err := storage.TakeCrossSigningReset(ctx, tx, req.userID, time.Now().UnixMilli())
			if err == nil && !ok {
				err = errWait
			}
			return err
		})
	case stageSSO:
		// Recorded by the fallback page once the user signed in again.
		return &mxhttp.Error{Status: http.StatusUnauthorized, ErrCode: "M_FORBIDDEN", Message: "Confirm your identity with single sign-on in the browser first"}
	case stageEmailIdentity:
		ts, err := a.emailStage(ctx, req, raw)
		if err != nil {
			return err
		}
		return record(func(tx *sql.Tx) error {
			return storage.AttachThreePIDSession(ctx, tx, ts.SessionID, sess.SessionID)
		})
	case stageRegistrationToken:
		if dict.Token == "" {
			return mxhttp.MissingParam("token is required for %s", stageRegistrationToken)
		}
		errInvalid := &mxhttp.Error{Status: http.StatusUnauthorized, ErrCode: "M_FORBIDDEN", Message: "Invalid registration token"}
		return record(func(tx *sql.Tx) error {
			ok, err := storage.HoldRegistrationToken(ctx, tx, sess.SessionID, dict.Token, time.Now().UnixMilli())
			if err != nil {
				return err
			}
			if !ok {
				return errInvalid // rolls back the whole attempt
			}
			return nil
		})
	}
	return mxhttp.Unknown("Unsupported authentication type %q", dict.Type)
}

// asUIAFailure turns a 403 M_FORBIDDEN from a credential check into the
// 401 a failed stage gets, so the client can try again.
func asUIAFailure(err error) error {
	var me *mxhttp.Error
	if errors.As(err, &me) && me.Status == http.StatusForbidden {
		c := *me
		c.Status = http.StatusUnauthorized
		return &c
	}
	return err
}

func (req uiaRequirement) paramsOrEmpty() map[string]any {
	if req.params == nil {
		return map[string]any{}
	}
	return req.params
}

// uiaChallenge is the 401 body: the flows, params, session and completed
// stages, and the error of a failed attempt if there was one.
func uiaChallenge(req uiaRequirement, sess storage.UIASession, failure *mxhttp.Error) *mxhttp.Error {
	e := &mxhttp.Error{Status: http.StatusUnauthorized}
	if failure != nil {
		e.ErrCode, e.Message = failure.ErrCode, failure.Message
	}
	completed := sess.Completed
	if completed == nil {
		completed = []string{}
	}
	e.Extra = map[string]any{
		"flows": req.flows, "params": req.paramsOrEmpty(), "session": sess.SessionID, "completed": completed,
	}
	return e
}

func offersStage(flows []uiaFlow, stage string) bool {
	for _, f := range flows {
		if slices.Contains(f.Stages, stage) {
			return true
		}
	}
	return false
}

func allCompleted(stages, completed []string) bool {
	for _, s := range stages {
		if !slices.Contains(completed, s) {
			return false
		}
	}
	return true
}
