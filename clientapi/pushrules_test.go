package clientapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

const pushRulesPath = "/_matrix/client/v3/pushrules/global/"

func rulePath(kind, id string, suffix ...string) string {
	p := pushRulesPath + kind + "/" + url.PathEscape(id)
	for _, s := range suffix {
		p += "/" + s
	}
	return p
}

// ruleIDs lists the rule IDs of one kind in the user's global ruleset.
func ruleIDs(t *testing.T, hs *hearthtest.Server, tok, kind string) []string {
	t.Helper()
	r := hs.Do(t, "GET", "/_matrix/client/v3/pushrules/", tok, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	global, _ := r.JSON["global"].(map[string]any)
	rules, ok := global[kind].([]any)
	if !ok {
		t.Fatalf("no %s list in %s", kind, r.Body)
	}
	ids := []string{}
	for _, rule := range rules {
		ids = append(ids, rule.(map[string]any)["rule_id"].(string))
	}
	return ids
}

func TestPushRulesDefaults(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, tok := hs.RegisterUser(t, "alice")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/pushrules/", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// The spec's server-default rules (push module, Predefined Rules), in
		// its order, with the legacy mention rules where v1.7-v1.16 had them
		// and MSC3930's poll rules where the MSC puts them.
		wantOverride := []string{".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.contains_display_name", ".m.rule.is_room_mention", ".m.rule.roomnotif",
			".m.rule.tombstone", ".m.rule.reaction", ".m.rule.room.server_acl", ".org.matrix.msc3930.rule.poll_response",
			".m.rule.suppress_edits"}
		wantUnderride := []string{".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one",
			".m.rule.message", ".m.rule.encrypted", ".org.matrix.msc3930.rule.poll_start_one_to_one",
			".org.matrix.msc3930.rule.poll_start", ".org.matrix.msc3930.rule.poll_end_one_to_one", ".org.matrix.msc3930.rule.poll_end"}
		if got := ruleIDs(t, hs, tok, "override"); !reflect.DeepEqual(got, wantOverride) {
			t.Errorf("override rules:\n got %v\nwant %v", got, wantOverride)
		}
		if got := ruleIDs(t, hs, tok, "underride"); !reflect.DeepEqual(got, wantUnderride) {
			t.Errorf("underride rules:\n got %v\nwant %v", got, wantUnderride)
		}
		if got := ruleIDs(t, hs, tok, "content"); !reflect.DeepEqual(got, []string{".m.rule.contains_user_name"}) {
			t.Errorf("content rules: %v", got)
		}
		for _, kind := range []string{"room", "sender"} {
			if got := ruleIDs(t, hs, tok, kind); len(got) != 0 {
				t.Errorf("%s rules: %v, want none", kind, got)
			}
		}

		// Rules are rendered exactly as the spec defines them, with the user's ID filled in.
		expectRule := func(kind, id, want string) {
			t.Helper()
			r := hs.Do(t, "GET", rulePath(kind, id), tok, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			var w map[string]any
			if err := json.Unmarshal([]byte(want), &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(r.JSON, w) {
				t.Errorf("%s:\n got %s\nwant %s", id, r.Body, want)
			}
		}
		expectRule("override", ".m.rule.master", `{"rule_id":".m.rule.master","default":true,"enabled":false,"conditions":[],"actions":[]}`)
		expectRule("override", ".m.rule.invite_for_me", `{"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,
			"conditions":[{"key":"type","kind":"event_match","pattern":"m.room.member"},
				{"key":"content.membership","kind":"event_match","pattern":"invite"},
				{"key":"state_key","kind":"event_match","pattern":"`+alice+`"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"}]}`)
		expectRule("override", ".m.rule.is_user_mention", `{"rule_id":".m.rule.is_user_mention","default":true,"enabled":true,
			"conditions":[{"kind":"event_property_contains","key":"content.m\\.mentions.user_ids","value":"`+alice+`"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`)
		expectRule("override", ".m.rule.is_room_mention", `{"rule_id":".m.rule.is_room_mention","default":true,"enabled":true,
			"conditions":[{"kind":"event_property_is","key":"content.m\\.mentions.room","value":true},
				{"kind":"sender_notification_permission","key":"room"}],
			"actions":["notify",{"set_tweak":"highlight"}]}`)
		expectRule("override", ".m.rule.tombstone", `{"rule_id":".m.rule.tombstone","default":true,"enabled":true,
			"conditions":[{"kind":"event_match","key":"type","pattern":"m.room.tombstone"},{"kind":"event_match","key":"state_key","pattern":""}],
			"actions":["notify",{"set_tweak":"highlight"}]}`)
		expectRule("override", ".m.rule.contains_display_name", `{"rule_id":".m.rule.contains_display_name","default":true,"enabled":true,
			"conditions":[{"kind":"contains_display_name"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`)
		expectRule("override", ".m.rule.roomnotif", `{"rule_id":".m.rule.roomnotif","default":true,"enabled":true,
			"conditions":[{"kind":"event_match","key":"content.body","pattern":"@room"},{"kind":"sender_notification_permission","key":"room"}],
			"actions":["notify",{"set_tweak":"highlight"}]}`)
		expectRule("content", ".m.rule.contains_user_name", `{"rule_id":".m.rule.contains_user_name","default":true,"enabled":true,
			"pattern":"alice","actions":["notify",{"set_tweak":"sound","value":"default"},{"set_tweak":"highlight"}]}`)
		expectRule("override", ".org.matrix.msc3930.rule.poll_response", `{"rule_id":".org.matrix.msc3930.rule.poll_response","default":true,"enabled":true,
			"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.response"}],"actions":[]}`)
		expectRule("underride", ".org.matrix.msc3930.rule.poll_start_one_to_one", `{"rule_id":".org.matrix.msc3930.rule.poll_start_one_to_one","default":true,"enabled":true,
			"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.start"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"}]}`)
		expectRule("underride", ".org.matrix.msc3930.rule.poll_end", `{"rule_id":".org.matrix.msc3930.rule.poll_end","default":true,"enabled":true,
			"conditions":[{"kind":"event_match","key":"type","pattern":"org.matrix.msc3381.poll.end"}],"actions":["notify"]}`)
		expectRule("underride", ".m.rule.encrypted_room_one_to_one", `{"rule_id":".m.rule.encrypted_room_one_to_one","default":true,"enabled":true,
			"conditions":[{"kind":"room_member_count","is":"2"},{"kind":"event_match","key":"type","pattern":"m.room.encrypted"}],
			"actions":["notify",{"set_tweak":"sound","value":"default"}]}`)

		// GET /pushrules/global/ is the same ruleset without the wrapper.
		r := hs.Do(t, "GET", pushRulesPath, tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["override"].([]any); !ok {
			t.Errorf("global ruleset: %s", r.Body)
		}

		// Unknown rules and kinds.
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", "nope"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("underride", ".m.rule.master"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", "nope", "enabled"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", "nope", "actions"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("weird", "x"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestPushRulesEdit(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		_, bobTok := hs.RegisterUser(t, "bob")
		put := func(kind, id, query string, body any) hearthtest.Response {
			t.Helper()
			return hs.Do(t, "PUT", rulePath(kind, id)+query, tok, body)
		}
		notify := map[string]any{"actions": []any{"notify"}}

		// A new rule goes first among user rules; master stays on top and
		// user override rules precede the other defaults.
		hearthtest.Expect(t, put("override", "a", "", map[string]any{"actions": []any{"notify"}, "conditions": []any{
			map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"},
			map[string]any{"kind": "room_member_count", "is": "<=10"},
		}}), http.StatusOK, "")
		hearthtest.Expect(t, put("override", "b", "", notify), http.StatusOK, "")
		got := ruleIDs(t, hs, tok, "override")
		if len(got) != 15 || got[0] != ".m.rule.master" || got[1] != "b" || got[2] != "a" || got[3] != ".m.rule.suppress_notices" {
			t.Fatalf("override order: %v", got)
		}
		// before and after place a rule next to a user rule.
		hearthtest.Expect(t, put("override", "c", "?after=b", notify), http.StatusOK, "")
		hearthtest.Expect(t, put("override", "d", "?before=b", notify), http.StatusOK, "")
		hearthtest.Expect(t, put("override", "e", "?after=a", notify), http.StatusOK, "")
		if got := ruleIDs(t, hs, tok, "override")[1:6]; !reflect.DeepEqual(got, []string{"d", "b", "c", "a", "e"}) {
			t.Fatalf("before/after order: %v", got)
		}
		// Both given: before wins. Moving an existing rule keeps one copy.
		hearthtest.Expect(t, put("override", "e", "?before=d&after=a", notify), http.StatusOK, "")
		if got := ruleIDs(t, hs, tok, "override")[1:6]; !reflect.DeepEqual(got, []string{"e", "d", "b", "c", "a"}) {
			t.Fatalf("moved rule order: %v", got)
		}
		// Anchors must be user rules of the same kind.
		hearthtest.Expect(t, put("override", "f", "?before=nope", notify), http.StatusBadRequest, "M_UNKNOWN")
		hearthtest.Expect(t, put("override", "f", "?after=.m.rule.message", notify), http.StatusBadRequest, "M_UNKNOWN")
		hearthtest.Expect(t, put("underride", "f", "?after=a", notify), http.StatusBadRequest, "M_UNKNOWN")
		if got := ruleIDs(t, hs, tok, "underride"); len(got) != 9 {
			t.Fatalf("a refused PUT added a rule: %v", got)
		}

		// The stored rule reads back with its conditions; a new rule is enabled.
		r := hs.Do(t, "GET", rulePath("override", "a"), tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["enabled"] != true || r.JSON["default"] != false || len(r.JSON["conditions"].([]any)) != 2 {
			t.Fatalf("rule a: %s", r.Body)
		}

		// Other kinds: content needs a pattern; room and sender rules are
		// named after their room or user; historical actions are kept.
		hearthtest.Expect(t, put("content", "cake", "", map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "cakealarm.wav"}}, "pattern": "cake"}), http.StatusOK, "")
		hearthtest.Expect(t, put("content", "nopattern", "", notify), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, put("room", "!dj234r78wl45Gh4D:matrix.org", "", map[string]any{"actions": []any{}}), http.StatusOK, "")
		hearthtest.Expect(t, put("sender", "@spambot:matrix.org", "", map[string]any{"actions": []any{"dont_notify"}}), http.StatusOK, "")
		r = hs.Do(t, "GET", "/_matrix/client/v3/pushrules/", tok, nil)
		global := r.JSON["global"].(map[string]any)
		content := global["content"].([]any)[0].(map[string]any)
		if content["pattern"] != "cake" || content["rule_id"] != "cake" {
			t.Errorf("content rule: %v", content)
		}
		if _, has := content["conditions"]; has {
			t.Errorf("content rule has conditions: %v", content)
		}
		sender := global["sender"].([]any)[0].(map[string]any)
		if sender["actions"].([]any)[0] != "dont_notify" {
			t.Errorf("sender rule: %v", sender)
		}
		if room := global["room"].([]any)[0].(map[string]any); room["rule_id"] != "!dj234r78wl45Gh4D:matrix.org" {
			t.Errorf("room rule: %v", room)
		}

		// Invalid rules.
		hearthtest.Expect(t, put("override", ".m.rule.mine", "", notify), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", `a\b`, "", notify), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "a/b", "", notify), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("room", "notaroom", "", notify), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("sender", "notauser", "", notify), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "g", "", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, put("override", "g", "", map[string]any{"actions": []any{"explode"}}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "g", "", map[string]any{"actions": []any{map[string]any{"value": 1}}}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "g", "", map[string]any{"actions": "notify"}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "g", "", map[string]any{"actions": []any{}, "conditions": []any{map[string]any{"key": "x"}}}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, put("override", "g", "", "{nope"), http.StatusBadRequest, "M_NOT_JSON")
		hearthtest.Expect(t, put("sideways", "g", "", notify), http.StatusBadRequest, "M_INVALID_PARAM")

		// Each user has their own rules.
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", "a"), bobTok, nil), http.StatusNotFound, "M_NOT_FOUND")

		// Delete: user rules go, default rules stay, unknown rules are 404.
		hearthtest.Expect(t, hs.Do(t, "DELETE", rulePath("override", "c"), tok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", "c"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "DELETE", rulePath("override", "c"), tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "DELETE", rulePath("override", ".m.rule.master"), tok, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", rulePath("override", ".m.rule.master"), tok, nil), http.StatusOK, "")
		if got := ruleIDs(t, hs, tok, "override")[1:5]; !reflect.DeepEqual(got, []string{"e", "d", "b", "a"}) {
			t.Fatalf("after delete: %v", got)
		}
	})
}

func TestPushRulesEnabledAndActions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		enabled := func(kind, id string) any {
			t.Helper()
			r := hs.Do(t, "GET", rulePath(kind, id, "enabled"), tok, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["enabled"]
		}
		actions := func(kind, id string) string {
			t.Helper()
			r := hs.Do(t, "GET", rulePath(kind, id, "actions"), tok, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			b, _ := json.Marshal(r.JSON["actions"])
			return string(b)
		}

		// Default rules: enable master, change the actions of .m.rule.message.
		if enabled("override", ".m.rule.master") != false {
			t.Fatal("master starts enabled")
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", ".m.rule.master", "enabled"), tok, map[string]any{"enabled": true}), http.StatusOK, "")
		if enabled("override", ".m.rule.master") != true {
			t.Fatal("master did not become enabled")
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("underride", ".m.rule.message", "actions"), tok,
			map[string]any{"actions": []any{"notify", map[string]any{"set_tweak": "highlight", "value": false}}}), http.StatusOK, "")
		if got := actions("underride", ".m.rule.message"); got != `["notify",{"set_tweak":"highlight","value":false}]` {
			t.Fatalf("message actions: %s", got)
		}
		// The default flag and the place of a changed default rule stay.
		r := hs.Do(t, "GET", rulePath("underride", ".m.rule.message"), tok, nil)
		if r.JSON["default"] != true || r.JSON["enabled"] != true {
			t.Fatalf("changed default rule: %s", r.Body)
		}
		if got := ruleIDs(t, hs, tok, "underride"); got[3] != ".m.rule.message" {
			t.Fatalf("changed default rule moved: %v", got)
		}

		// User rules: disable, change actions; re-PUT keeps the enabled state.
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("room", "!r:hearth.test"), tok, map[string]any{"actions": []any{"notify"}}), http.StatusOK, "")
		if enabled("room", "!r:hearth.test") != true {
			t.Fatal("new rule is not enabled")
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("room", "!r:hearth.test", "enabled"), tok, map[string]any{"enabled": false}), http.StatusOK, "")
		if enabled("room", "!r:hearth.test") != false {
			t.Fatal("rule did not become disabled")
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("room", "!r:hearth.test", "actions"), tok, map[string]any{"actions": []any{"dont_notify"}}), http.StatusOK, "")
		if got := actions("room", "!r:hearth.test"); got != `["dont_notify"]` {
			t.Fatalf("room rule actions: %s", got)
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("room", "!r:hearth.test"), tok, map[string]any{"actions": []any{"notify"}}), http.StatusOK, "")
		if enabled("room", "!r:hearth.test") != false || actions("room", "!r:hearth.test") != `["notify"]` {
			t.Fatal("replacing a rule must update its actions and keep it disabled")
		}

		// Errors.
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", "nope", "enabled"), tok, map[string]any{"enabled": true}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", "nope", "actions"), tok, map[string]any{"actions": []any{}}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", ".m.rule.master", "enabled"), tok, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", ".m.rule.master", "enabled"), tok, map[string]any{"enabled": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", ".m.rule.master", "actions"), tok, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, hs.Do(t, "PUT", rulePath("override", ".m.rule.master", "actions"), tok, map[string]any{"actions": []any{42}}), http.StatusBadRequest, "M_INVALID_PARAM")
		if enabled("override", ".m.rule.master") != true {
			t.Fatal("a refused request changed the rule")
		}
	})
}

// Push rule changes are read-modify-writes of one stored document: changes
// made at the same time must all survive.
func TestPushRulesConcurrentChanges(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		_, tok := hs.RegisterUser(t, "alice")
		const n = 12
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := hs.Do(t, "PUT", rulePath("sender", fmt.Sprintf("@u%d:hearth.test", i)), tok, map[string]any{"actions": []any{"notify"}})
				if r.Status != http.StatusOK {
					t.Errorf("PUT %d: %d %s", i, r.Status, r.Body)
				}
			}()
		}
		wg.Wait()
		if got := ruleIDs(t, hs, tok, "sender"); len(got) != n {
			t.Fatalf("%d of %d concurrent rules survived: %v", len(got), n, got)
		}
	})
}
