package appservice

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"time"
)

// Third-party networks (Application Service API, Third-party networks):
// the client-server third_party_lookup endpoints are answered by asking
// the services that registered the protocol.

// queryTimeout bounds one question to a service.
const queryTimeout = 10 * time.Second

// Protocol returns what the services registering protocol say of it:
// the first answer's metadata, with every service's instances, each with
// an instance_id ("<service id>|<network_id>") unique on this server.
// ok is false when no service answered.
func (p *Pusher) Protocol(ctx context.Context, protocol string) (out map[string]any, ok bool) {
	if p == nil {
		return nil, false
	}
	var instances []any
	for _, reg := range p.registry.All() {
		if reg.PushURL() == "" || !slices.Contains(reg.Protocols, protocol) {
			continue
		}
		var answer map[string]any
		if !p.get(ctx, reg, "/_matrix/app/v1/thirdparty/protocol/"+url.PathEscape(protocol), &answer) || answer == nil {
			continue
		}
		if out == nil {
			out = answer
		}
		list, _ := answer["instances"].([]any)
		for _, inst := range list {
			if m, isObj := inst.(map[string]any); isObj {
				network, _ := m["network_id"].(string)
				m["instance_id"] = reg.ID + "|" + network
				instances = append(instances, m)
			}
		}
	}
	if out == nil {
		return nil, false
	}
	if instances == nil {
		instances = []any{}
	}
	out["instances"] = instances
	return out, true
}

// Protocols answers GET /thirdparty/protocols: every registered protocol
// whose service answers.
func (p *Pusher) Protocols(ctx context.Context) map[string]any {
	out := map[string]any{}
	if p == nil {
		return out
	}
	for _, reg := range p.registry.All() {
		for _, protocol := range reg.Protocols {
			if _, done := out[protocol]; done {
				continue
			}
			if info, ok := p.Protocol(ctx, protocol); ok {
				out[protocol] = info
			}
		}
	}
	return out
}

// Lookup asks the services for third-party locations or users (kind
// "location" or "user"): those registering protocol, or with protocol ""
// every service (a reverse lookup by alias or user ID). The answers are
// concatenated.
func (p *Pusher) Lookup(ctx context.Context, kind, protocol string, query url.Values) []json.RawMessage {
	out := []json.RawMessage{}
	if p == nil {
		return out
	}
	path := "/_matrix/app/v1/thirdparty/" + kind
	if protocol != "" {
		path += "/" + url.PathEscape(protocol)
	}
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	for _, reg := range p.registry.All() {
		if reg.PushURL() == "" || protocol != "" && !slices.Contains(reg.Protocols, protocol) {
			continue
		}
		var answer []json.RawMessage
		if p.get(ctx, reg, path, &answer) {
			out = append(out, answer...)
		}
	}
	return out
}

// get makes a GET to a service and decodes a 2xx answer into v; failures
// are logged (a 404 is an answer, not a failure) and give false.
func (p *Pusher) get(ctx context.Context, reg *Registration, path string, v any) bool {
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	body, err := p.call(qctx, reg, "GET", path, nil)
	if err != nil {
		if !isNotFound(err) {
			p.log.Warn("application service query failed", "appservice", reg.ID, "path", path, "err", err)
		}
		return false
	}
	if err := json.Unmarshal(body, v); err != nil {
		p.log.Warn("application service answered with bad JSON", "appservice", reg.ID, "path", path, "err", err)
		return false
	}
	return true
}
