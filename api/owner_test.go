package api_test

import (
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"testing"
)

// TestServerOwnerProtected: a maintainer cannot demote an owner, and
// nobody demotes the last owner, not even itself; an owner demotes
// another owner while one is left.
func TestServerOwnerProtected(t *testing.T) { inHTTPModes(t, testServerOwnerProtected) }

func testServerOwnerProtected(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	maint := e.newUser(t, "maint", "maintainer")
	role := func(user, key string) string {
		var r struct {
			Role *string `json:"role"`
		}
		e.get(t, "/api/users/"+user+"/role", key).want(t, http.StatusOK).decode(t, &r)
		if r.Role == nil {
			return ""
		}
		return *r.Role
	}
	set := func(key, user, to string) *res {
		return e.do(t, "PUT", "/api/users/"+user+"/role", key, map[string]any{"role": to}, nil)
	}
	steps := []struct {
		name, key, user, to string
		want                int
	}{
		{"maintainer demotes the owner to member", maint, "admin", "member", http.StatusForbidden},
		{"maintainer clears the owner's role", maint, "admin", "", http.StatusForbidden},
		{"the last owner demotes itself", admin, "admin", "member", http.StatusConflict},
		{"the owner makes a second owner", admin, "maint", "owner", http.StatusOK},
		{"the second owner demotes the first", maint, "admin", "maintainer", http.StatusOK},
		{"the now last owner demotes itself", maint, "maint", "member", http.StatusConflict},
		{"a maintainer promotes itself", admin, "admin", "owner", http.StatusForbidden},
	}
	for _, s := range steps {
		before := role(s.user, admin)
		r := set(s.key, s.user, s.to)
		if r.status != s.want {
			t.Fatalf("%s: %v, want %d", s.name, r, s.want)
		}
		if after := role(s.user, admin); s.want != http.StatusOK && after != before {
			t.Fatalf("%s: refused, but the role changed %q -> %q", s.name, before, after)
		}
	}
	if got := role("maint", admin); got != "owner" {
		t.Fatalf("maint's role %q, want owner", got)
	}
}
