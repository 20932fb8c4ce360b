package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/glob"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Invite permission (client-server API, Invite permission, v1.18): a user
// blocks all invites with m.invite_permission_config {"default_action":
// "block"}. MSC4155's finer config (allowed / ignored / blocked users and
// servers, with globs) is honoured too under its unstable name, as
// Element's labs and Complement use it.

const (
	invitePermissionType        = "m.invite_permission_config"
	invitePermissionTypeMSC4155 = "org.matrix.msc4155.invite_permission_config"
)

// InviteVerdict is what the invitee's settings say of an invite.
type InviteVerdict int

const (
	InviteAllowed InviteVerdict = iota
	// InviteIgnored: the invite goes through but the invitee never sees it.
	InviteIgnored
	// InviteBlocked: the invite is refused with 403 M_INVITE_BLOCKED.
	InviteBlocked
)

// ErrInviteBlocked is the spec's answer to an invite the invitee blocks.
func ErrInviteBlocked(invitee string) *mxhttp.Error {
	return mxhttp.InviteBlocked("%s does not accept this invite", invitee)
}

// InvitePermission judges an invite of local user invitee by inviter. A
// missing or malformed config allows everything.
func (r *Rooms) InvitePermission(ctx context.Context, invitee, inviter string) (InviteVerdict, error) {
	d, err := r.db.GetAccountData(ctx, invitee, "", invitePermissionType)
	if err == nil {
		var c struct {
			DefaultAction string `json:"default_action"`
		}
		if json.Unmarshal(d.Content, &c) == nil && c.DefaultAction == "block" {
			return InviteBlocked, nil
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return InviteAllowed, err
	}
	d, err = r.db.GetAccountData(ctx, invitee, "", invitePermissionTypeMSC4155)
	if errors.Is(err, storage.ErrNotFound) {
		return InviteAllowed, nil
	}
	if err != nil {
		return InviteAllowed, err
	}
	var c struct {
		AllowedUsers   []string `json:"allowed_users"`
		IgnoredUsers   []string `json:"ignored_users"`
		BlockedUsers   []string `json:"blocked_users"`
		AllowedServers []string `json:"allowed_servers"`
		IgnoredServers []string `json:"ignored_servers"`
		BlockedServers []string `json:"blocked_servers"`
	}
	if json.Unmarshal(d.Content, &c) != nil {
		return InviteAllowed, nil
	}
	_, server, err := gomatrixserverlib.SplitID('@', inviter)
	if err != nil {
		return InviteAllowed, nil
	}
	// Rules about the user come before rules about their server; within
	// each, allow before ignore before block (MSC4155).
	for _, rule := range []struct {
		globs   []string
		subject string
		verdict InviteVerdict
	}{
		{c.AllowedUsers, inviter, InviteAllowed}, {c.IgnoredUsers, inviter, InviteIgnored}, {c.BlockedUsers, inviter, InviteBlocked},
		{c.AllowedServers, string(server), InviteAllowed}, {c.IgnoredServers, string(server), InviteIgnored}, {c.BlockedServers, string(server), InviteBlocked},
	} {
		for _, g := range rule.globs {
			if glob.Match(g, rule.subject) {
				return rule.verdict, nil
			}
		}
	}
	return InviteAllowed, nil
}

// checkInvite refuses an invite the local invitee blocks.
func (r *Rooms) checkInvite(ctx context.Context, invitee, inviter string) error {
	v, err := r.InvitePermission(ctx, invitee, inviter)
	if err != nil {
		return err
	}
	if v == InviteBlocked {
		return ErrInviteBlocked(invitee)
	}
	return nil
}
