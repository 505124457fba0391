package api_test

import (
	"encoding/json"
	"github.com/condamesh/condamesh/node/nodetest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

type apiKey struct {
	Description string           `json:"description"`
	TimeCreated string           `json:"time_created"`
	ExpireAt    *string          `json:"expire_at"`
	Roles       []map[string]any `json:"roles"`
	Key         string           `json:"key"`
}

// newKey creates an API key as key and returns the response object.
func (e *env) newKey(t testing.TB, key string, body map[string]any) apiKey {
	t.Helper()
	var k apiKey
	e.do(t, "POST", "/api/api-keys", key, body, nil).want(t, 201).decode(t, &k)
	return k
}

// Cases 75-78 of quetz-api.md §10.
func TestRESTUsersAndKeys(t *testing.T) { inHTTPModes(t, testRESTUsersAndKeys) }

func testRESTUsersAndKeys(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	owner := e.newUser(t, "k-owner", "owner")
	maint := e.newUser(t, "k-maint", "maintainer")
	member := e.newUser(t, "k-member", "member")
	none := e.newUser(t, "k-none", "")

	t.Run("create users", func(t *testing.T) {
		e.do(t, "POST", "/api/users", "", map[string]any{"username": "x1"}, nil).wantErr(t, 401, "Not logged in")
		e.do(t, "POST", "/api/users", member, map[string]any{"username": "x1"}, nil).want(t, 403)
		e.do(t, "POST", "/api/users", maint, map[string]any{"username": "x1", "role": "owner"}, nil).want(t, 403)
		e.do(t, "POST", "/api/users", maint, map[string]any{"username": "x1", "role": "member"}, nil).want(t, 201)
		e.do(t, "POST", "/api/users", admin, map[string]any{"username": "x1"}, nil).want(t, 409)
		e.do(t, "POST", "/api/users", admin, map[string]any{"username": "X Y"}, nil).want(t, 422)
		e.do(t, "POST", "/api/users", admin, map[string]any{"username": "x2", "role": "king"}, nil).want(t, 422)
		e.get(t, "/api/users/x1", "").want(t, 401)
		e.get(t, "/api/users/x1", none).want(t, 200)
		e.get(t, "/api/users/nobody", none).wantErr(t, 404, "user nobody not found")
	})

	// 75.
	t.Run("server role assignment", func(t *testing.T) {
		target := e.newUser(t, "target", "")
		role := func() any {
			t.Helper()
			return e.get(t, "/api/users/target/role", admin).want(t, 200).obj(t)["role"]
		}
		set := func(key string, r any, want int) {
			t.Helper()
			e.do(t, "PUT", "/api/users/target/role", key, map[string]any{"role": r}, nil).want(t, want)
		}
		for _, tc := range []struct {
			who, key string
			role     any
			want     int
		}{
			{"maintainer sets member", maint, "member", 200},
			{"maintainer sets maintainer", maint, "maintainer", 403},
			{"maintainer sets owner", maint, "owner", 403},
			{"member sets member", member, "member", 403},
			{"owner sets owner", owner, "owner", 200},
			{"owner sets maintainer", owner, "maintainer", 200},
			{"owner sets member", owner, "member", 200},
			{"owner clears", owner, nil, 200},
			{"owner sets member again", owner, "member", 200},
			// Fixed Quetz defect (§12): clearing a role needs an elevated
			// user, not nothing at all.
			{"member clears", member, nil, 403},
			{"no role clears", none, nil, 403},
			{"anonymous clears", "", nil, 401},
			{"maintainer clears", maint, nil, 200},
		} {
			t.Run(tc.who, func(t *testing.T) {
				before := role()
				set(tc.key, tc.role, tc.want)
				got := role()
				if tc.want == 200 && got != tc.role {
					t.Errorf("role = %v, want %v", got, tc.role)
				}
				if tc.want != 200 && got != before {
					t.Errorf("refused change altered the role: %v -> %v", before, got)
				}
			})
		}
		e.do(t, "PUT", "/api/users/nobody/role", owner, map[string]any{"role": "member"}, nil).want(t, 404)
		r := e.do(t, "PUT", "/api/users/target/role", owner, map[string]any{"role": "UNDEFINED"}, nil).want(t, 422)
		if d := r.detail(t); !strings.Contains(d, "member") {
			t.Errorf("422 detail %q does not mention member", d)
		}
		e.get(t, "/api/users/target/role", "").want(t, 401)
		e.get(t, "/api/users/target/role", member).want(t, 403)
		if got := e.get(t, "/api/users/k-member/role", member).want(t, 200).obj(t)["role"]; got != "member" {
			t.Errorf("own role = %v", got)
		}
		e.get(t, "/api/users/k-member/role", maint).want(t, 200)
		// Roles take effect: a member may create a local channel, no role may not.
		e.do(t, "PUT", "/api/users/target/role", owner, map[string]any{"role": "member"}, nil).want(t, 200)
		e.do(t, "POST", "/api/channels", target, map[string]any{"name": "by-target"}, nil).want(t, 201)
		e.do(t, "PUT", "/api/users/target/role", owner, map[string]any{"role": nil}, nil).want(t, 200)
		e.do(t, "POST", "/api/channels", target, map[string]any{"name": "by-target-2"}, nil).want(t, 403)
	})

	// 77.
	t.Run("create keys", func(t *testing.T) {
		e.newChannel(t, "keys-a", true, admin)
		e.do(t, "POST", "/api/channels/keys-a/packages", admin, map[string]any{"name": "kpkg"}, nil).want(t, 201)
		today := time.Now().UTC().Format(time.DateOnly)
		keyRe := regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

		r := e.do(t, "POST", "/api/api-keys", admin, map[string]any{"description": "chan", "roles": []map[string]any{{"channel": "keys-a", "role": "maintainer"}}}, nil).want(t, 201)
		var raw map[string]json.RawMessage
		r.decode(t, &raw)
		for _, f := range []string{"description", "time_created", "expire_at", "roles", "key"} {
			if _, ok := raw[f]; !ok {
				t.Errorf("key object lacks %s: %s", f, r.body)
			}
		}
		var k apiKey
		r.decode(t, &k)
		if k.Description != "chan" || k.TimeCreated != today || k.ExpireAt != nil || !keyRe.MatchString(k.Key) ||
			len(k.Roles) != 1 || k.Roles[0]["channel"] != "keys-a" || k.Roles[0]["role"] != "maintainer" || k.Roles[0]["package"] != nil {
			t.Errorf("key = %s", r.body)
		}
		if _, ok := k.Roles[0]["package"]; !ok {
			t.Errorf("role lacks package: null")
		}
		pk := e.newKey(t, admin, map[string]any{"description": "pkg", "roles": []map[string]any{{"channel": "keys-a", "package": "kpkg", "role": "member"}}})
		if len(pk.Roles) != 1 || pk.Roles[0]["package"] != "kpkg" || pk.Roles[0]["role"] != "member" {
			t.Errorf("package key roles = %v", pk.Roles)
		}
		for _, roles := range []any{[]any{}, nil} {
			// roles: [] and roles: null (a fixed Quetz defect, §12) both
			// give an unscoped key.
			r := e.do(t, "POST", "/api/api-keys", member, map[string]any{"description": "plain", "roles": roles}, nil).want(t, 201)
			var m map[string]any
			r.decode(t, &m)
			if v, ok := m["roles"]; !ok || v != nil {
				t.Errorf("roles %v: key = %s, want roles: null", roles, r.body)
			}
			var plain apiKey
			r.decode(t, &plain)
			if got := e.get(t, "/api/me", plain.Key).want(t, 200).obj(t)["user"].(map[string]any)["username"]; got != "k-member" {
				t.Errorf("unscoped key acts as %v", got)
			}
		}
		exp := e.newKey(t, member, map[string]any{"description": "exp", "expire_at": "2099-12-31"})
		if exp.ExpireAt == nil || *exp.ExpireAt != "2099-12-31" {
			t.Errorf("expire_at = %v", exp.ExpireAt)
		}
		e.do(t, "POST", "/api/api-keys", "", map[string]any{"description": "anon"}, nil).wantErr(t, 401, "Not logged in")
		e.do(t, "POST", "/api/api-keys", member, map[string]any{}, nil).wantErr(t, 422, "Field required")
		e.do(t, "POST", "/api/api-keys", admin, map[string]any{"description": "d", "roles": []map[string]any{{"channel": "keys-a", "role": "boss"}}}, nil).want(t, 422)

		// Who may grant which role.
		keys := map[string]string{}
		for _, u := range []string{"kc-owner", "kc-maint", "kc-member", "kp-owner", "kp-maint", "kp-member"} {
			keys[u] = e.newUser(t, u, "")
		}
		for u, role := range map[string]string{"kc-owner": "owner", "kc-maint": "maintainer", "kc-member": "member"} {
			e.addMember(t, "keys-a", u, role)
		}
		for u, role := range map[string]string{"kp-owner": "owner", "kp-maint": "maintainer", "kp-member": "member"} {
			e.addPackageMember(t, "keys-a", "kpkg", u, role)
		}
		for _, tc := range []struct {
			user, pkg, role string
			want            int
		}{
			{"kc-owner", "", "owner", 201},
			{"kc-maint", "", "owner", 403},
			{"kc-maint", "", "maintainer", 201},
			{"kc-member", "", "member", 403},
			{"kc-maint", "kpkg", "owner", 201},
			{"kp-owner", "kpkg", "owner", 201},
			{"kp-maint", "kpkg", "owner", 403},
			{"kp-maint", "kpkg", "member", 201},
			{"kp-member", "kpkg", "member", 403},
			{"kp-owner", "", "member", 403},
		} {
			role := map[string]any{"channel": "keys-a", "role": tc.role}
			if tc.pkg != "" {
				role["package"] = tc.pkg
			}
			if r := e.do(t, "POST", "/api/api-keys", keys[tc.user], map[string]any{"description": "g", "roles": []any{role}}, nil); r.status != tc.want {
				t.Errorf("%s grants %v: %v, want %d", tc.user, role, r, tc.want)
			}
		}
	})

	// 77 (validity) and listing.
	t.Run("expired and deleted keys", func(t *testing.T) {
		yesterday := time.Now().UTC().AddDate(0, 0, -1).Format(time.DateOnly)
		today := time.Now().UTC().Format(time.DateOnly)
		expired := e.newKey(t, member, map[string]any{"description": "expired", "expire_at": yesterday})
		lastDay := e.newKey(t, member, map[string]any{"description": "last day", "expire_at": today})
		forever := e.newKey(t, member, map[string]any{"description": "forever"})
		gone := e.newKey(t, member, map[string]any{"description": "gone"})
		e.do(t, "DELETE", "/api/api-keys/"+gone.Key, member, nil, nil).want(t, 200)
		e.newChannel(t, "keys-pub", false, admin)

		for _, tc := range []struct {
			who, key string
			ok       bool
		}{{"expired", expired.Key, false}, {"deleted", gone.Key, false}, {"expires today", lastDay.Key, true}, {"no expiry", forever.Key, true}} {
			t.Run(tc.who, func(t *testing.T) {
				for _, p := range []string{"/api/me", "/api/api-keys", "/api/channels/keys-pub/members"} {
					r := e.get(t, p, tc.key)
					switch {
					case !tc.ok:
						r.wantErr(t, 401, "Not logged in")
					case p == "/api/channels/keys-pub/members":
						r.want(t, 403) // logged in, no channel role
					default:
						r.want(t, 200)
					}
				}
				// Public reads work for anyone; a dead key is anonymous.
				e.get(t, "/api/channels/keys-pub", tc.key).want(t, 200)
				want := 401
				if tc.ok {
					want = 201
				}
				e.do(t, "POST", "/api/channels", tc.key, map[string]any{"name": "by-" + strings.ReplaceAll(tc.who, " ", "-")}, nil).want(t, want)
				// Via the URL token too.
				e.get(t, "/t/"+tc.key+"/api/me", "").want(t, map[bool]int{true: 200, false: 401}[tc.ok])
			})
		}
		var listed []apiKey
		e.get(t, "/api/api-keys", member).want(t, 200).decode(t, &listed)
		var descs []string
		for _, k := range listed {
			descs = append(descs, k.Description)
			if k.Description == "forever" && (k.Roles != nil || k.ExpireAt != nil) {
				t.Errorf("listed key = %+v", k)
			}
		}
		for _, d := range []string{"expired", "last day", "forever"} {
			if !slices.Contains(descs, d) {
				t.Errorf("GET /api/api-keys lacks %q: %v", d, descs)
			}
		}
		if slices.Contains(descs, "gone") {
			t.Errorf("GET /api/api-keys lists a deleted key")
		}
		e.get(t, "/api/api-keys", "").want(t, 401)
	})

	// 76.
	t.Run("delete keys", func(t *testing.T) {
		for _, tc := range []struct {
			who, deleter, holder string
			want                 int
		}{
			{"maintainer deletes another's key", maint, member, 200},
			{"owner deletes another's key", owner, none, 200},
			{"member deletes own key", member, member, 200},
			{"member deletes another's key", member, none, 403},
			{"no role deletes own key", none, none, 200},
			{"no role deletes another's key", none, member, 403},
			{"anonymous", "", member, 401},
		} {
			t.Run(tc.who, func(t *testing.T) {
				k := e.newKey(t, tc.holder, map[string]any{"description": "victim"})
				e.do(t, "DELETE", "/api/api-keys/"+k.Key, tc.deleter, nil, nil).want(t, tc.want)
				want := 200
				if tc.want == 200 {
					want = 401
				}
				e.get(t, "/api/me", k.Key).want(t, want)
			})
		}
		e.do(t, "DELETE", "/api/api-keys/doesnotexist", owner, nil, nil).wantErr(t, 404, "key '***' does not exist") // Quetz echoes the key: secrets are never shown
		k := e.newKey(t, member, map[string]any{"description": "twice"})
		e.do(t, "DELETE", "/api/api-keys/"+k.Key, member, nil, nil).want(t, 200)
		e.do(t, "DELETE", "/api/api-keys/"+k.Key, member, nil, nil).wantErr(t, 404, "does not exist")
		// A scoped key may be deleted by its owner and by itself.
		e.newChannel(t, "keys-del", false, member)
		s1 := e.newKey(t, member, map[string]any{"description": "s1", "roles": []map[string]any{{"channel": "keys-del", "role": "member"}}})
		s2 := e.newKey(t, member, map[string]any{"description": "s2", "roles": []map[string]any{{"channel": "keys-del", "role": "member"}}})
		e.do(t, "DELETE", "/api/api-keys/"+s1.Key, member, nil, nil).want(t, 200)
		e.do(t, "DELETE", "/api/api-keys/"+s2.Key, s2.Key, nil, nil).want(t, 200)
		// The deleted key is anonymous now.
		e.do(t, "DELETE", "/api/api-keys/"+member, s2.Key, nil, nil).want(t, 401)
	})

	// 78.
	t.Run("scoped and unscoped keys across channels", func(t *testing.T) {
		chOwner := e.newUser(t, "sc-owner", "member")
		e.newChannel(t, "sc-a", true, chOwner)
		e.newChannel(t, "sc-b", true, chOwner)
		e.newChannel(t, "sc-pub", false, chOwner)
		for _, ch := range []string{"sc-a", "sc-b"} {
			e.do(t, "POST", "/api/channels/"+ch+"/packages", chOwner, map[string]any{"name": "p"}, nil).want(t, 201)
		}
		// An unscoped key of a server owner reads everything.
		for _, ch := range []string{"sc-a", "sc-b", "sc-pub"} {
			for _, p := range []string{"", "/members", "/packages", "/packages/p"} {
				if p == "/packages/p" && ch == "sc-pub" {
					continue
				}
				e.get(t, "/api/channels/"+ch+p, owner).want(t, 200)
			}
		}
		// A key scoped to sc-a, even one made by the server owner, only
		// has its roles.
		for _, maker := range []struct{ name, key string }{{"channel owner", chOwner}, {"server owner", admin}} {
			t.Run(maker.name, func(t *testing.T) {
				k := e.newKey(t, maker.key, map[string]any{"description": "ci", "roles": []map[string]any{{"channel": "sc-a", "role": "maintainer"}}})
				e.get(t, "/api/channels/sc-a", k.Key).want(t, 200)
				e.get(t, "/api/channels/sc-a/members", k.Key).want(t, 200)
				e.get(t, "/api/channels/sc-a/packages/p", k.Key).want(t, 200)
				e.get(t, "/api/channels/sc-b", k.Key).wantErr(t, 403, "No permission")
				e.get(t, "/api/channels/sc-b/packages", k.Key).want(t, 403)
				e.get(t, "/api/channels/sc-pub/members", k.Key).wantErr(t, 403, "No permission")
				e.do(t, "POST", "/api/channels/sc-b/packages", k.Key, map[string]any{"name": "q"}, nil).want(t, 403)
				e.do(t, "POST", "/api/channels", k.Key, map[string]any{"name": "sc-new"}, nil).want(t, 403)
				e.do(t, "PUT", "/api/users/k-none/role", k.Key, map[string]any{"role": "member"}, nil).want(t, 403)
				got := names(e.get(t, "/api/channels?public=0&q=sc-", k.Key).want(t, 200).list(t))
				if !slices.Equal(got, []string{"sc-a"}) {
					t.Errorf("scoped key lists %v, want [sc-a]", got)
				}
				// The anonymous key user is no listed member.
				for _, m := range e.get(t, "/api/channels/sc-a/members", chOwner).want(t, 200).list(t) {
					if u := m["user"].(map[string]any); u["username"] == "" || u["username"] == nil {
						t.Errorf("anonymous key user listed: %v", m)
					}
				}
			})
		}
		// A member-scoped key reads but does not write.
		k := e.newKey(t, chOwner, map[string]any{"description": "ro", "roles": []map[string]any{{"channel": "sc-a", "role": "member"}}})
		e.get(t, "/api/channels/sc-a/packages", k.Key).want(t, 200)
		e.do(t, "POST", "/api/channels/sc-a/packages", k.Key, map[string]any{"name": "r"}, nil).wantErr(t, 403, "No permission")
		e.do(t, "DELETE", "/api/channels/sc-a", k.Key, nil, nil).want(t, 403)
	})
}
