package api_test

import (
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

// searchRig: carol (a server member) owns the public channel pub-one
// ("numerical things": alpha-lib on linux-64, beta-tool on noarch) and the
// private channel priv-two (alpha-secret); alice is a member of priv-two,
// bob of nothing.
type searchRig struct {
	*env
	carol, alice, bob string
}

func newSearchRig(t *testing.T, mode ...nodetest.Option) *searchRig {
	e := start(t, mode...)
	r := &searchRig{env: e, carol: e.newUser(t, "carol", "member"), alice: e.newUser(t, "alice", ""), bob: e.newUser(t, "bob", "")}
	e.do(t, "POST", "/api/channels", r.carol, map[string]any{"name": "pub-one", "private": false, "description": "numerical things"}, nil).want(t, http.StatusCreated)
	e.newChannel(t, "priv-two", true, r.carol)
	e.addMember(t, "priv-two", "alice", "member")
	for _, u := range []struct {
		ch   string
		spec condatest.Spec
	}{
		{"pub-one", pkgSpec("alpha-lib", "1.0", "linux-64")},
		{"pub-one", pkgSpec("alpha-lib", "1.2", "linux-64")},
		{"pub-one", pkgSpec("beta-tool", "0.3", "noarch")},
		{"priv-two", pkgSpec("alpha-secret", "2.0", "noarch")},
	} {
		e.upload(t, r.carol, u.ch, condatest.Filename(u.spec, ".conda"), condatest.Conda(t, u.spec)).want(t, http.StatusCreated)
	}
	return r
}

func searchURL(kind, q string) string {
	return "/api/" + kind + "/search/?q=" + url.QueryEscape(q)
}

type pageInfo struct {
	Skip            int `json:"skip"`
	Limit           int `json:"limit"`
	AllRecordsCount int `json:"all_records_count"`
}

// Issue #9 point 21: GET /api/channels/search/ and /api/packages/search/
// with Quetz's query syntax and visibility (private channels only for
// their members).
func TestRESTSearch(t *testing.T) { inHTTPModes(t, testRESTSearch) }

func testRESTSearch(t *testing.T, mode ...nodetest.Option) {
	r := newSearchRig(t, mode...)
	keys := map[string]string{"anon": "", "alice": r.alice, "bob": r.bob}

	t.Run("channels", func(t *testing.T) {
		for _, tc := range []struct {
			who, q string
			want   []string
		}{
			{"anon", "", []string{"pub-one"}},
			{"bob", "", []string{"pub-one"}},
			{"alice", "", []string{"priv-two", "pub-one"}},
			{"alice", "ONE", []string{"pub-one"}},
			{"alice", "NOT one", []string{"priv-two"}},
			{"anon", "private:no", []string{"pub-one"}},
			{"anon", "private:y", nil},
			{"alice", "-private:false", []string{"priv-two"}},
			{"alice", "description:numerical", []string{"pub-one"}},
			{"alice", "description:zzz,numerical", []string{"pub-one"}},
			{"alice", "-description:numerical", []string{"priv-two"}},
			{"alice", `"pub-one"`, []string{"pub-one"}},
			{"alice", "unknown:filter", []string{"priv-two", "pub-one"}},
		} {
			t.Run(tc.who+" "+tc.q, func(t *testing.T) {
				l := r.get(t, searchURL("channels", tc.q), keys[tc.who]).want(t, http.StatusOK).list(t)
				if got := names(l); !slices.Equal(got, tc.want) && !(len(got) == 0 && tc.want == nil) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
				for _, c := range l {
					if len(c) != 3 || c["private"] == nil {
						t.Errorf("item %v: want exactly name, description, private", c)
					}
				}
			})
		}
		l := r.get(t, searchURL("channels", "pub"), "").want(t, http.StatusOK).list(t)
		if len(l) != 1 || l[0]["description"] != "numerical things" || l[0]["private"] != false {
			t.Errorf("pub-one: %v", l)
		}
	})

	t.Run("packages", func(t *testing.T) {
		for _, tc := range []struct {
			who, q string
			want   []string // channel/name
		}{
			{"anon", "", []string{"pub-one/alpha-lib", "pub-one/beta-tool"}},
			{"bob", "alpha", []string{"pub-one/alpha-lib"}},
			{"alice", "alpha", []string{"priv-two/alpha-secret", "pub-one/alpha-lib"}},
			{"alice", "alpha NOT secret", []string{"pub-one/alpha-lib"}},
			{"alice", "channel:two", []string{"priv-two/alpha-secret"}},
			{"alice", "-channel:two", []string{"pub-one/alpha-lib", "pub-one/beta-tool"}},
			{"alice", "channel:two,one lib", []string{"pub-one/alpha-lib"}},
			{"alice", "platform:linux-64", []string{"pub-one/alpha-lib"}},
			{"alice", "-platform:linux-64", []string{"priv-two/alpha-secret", "pub-one/beta-tool"}},
			{"anon", "channel:two", nil},
		} {
			t.Run(tc.who+" "+tc.q, func(t *testing.T) {
				l := r.get(t, searchURL("packages", tc.q), keys[tc.who]).want(t, http.StatusOK).list(t)
				var got []string
				for _, p := range l {
					got = append(got, fmt.Sprint(p["channel_name"], "/", p["name"]))
				}
				slices.Sort(got)
				if !slices.Equal(got, tc.want) {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			})
		}
		l := r.get(t, searchURL("packages", "alpha-lib"), "").want(t, http.StatusOK).list(t)
		if len(l) != 1 {
			t.Fatalf("alpha-lib: %v", l)
		}
		p := l[0]
		for _, f := range []string{"name", "summary", "description", "url", "platforms", "current_version", "latest_change", "channel_name"} {
			if _, ok := p[f]; !ok {
				t.Errorf("alpha-lib lacks %q: %v", f, p)
			}
		}
		if p["current_version"] != "1.2" || fmt.Sprint(p["platforms"]) != "[linux-64]" {
			t.Errorf("alpha-lib: %v", p)
		}
	})

	t.Run("bad queries", func(t *testing.T) {
		for _, tc := range []struct{ path, sub string }{
			{"/api/channels/search/", "Field required"},
			{"/api/packages/search/", "Field required"},
			{searchURL("packages", `"unclosed`), "quotes"},
			{searchURL("channels", `trailing\`), "backslash"},
			{searchURL("channels", "private:maybe"), "boolean"},
			{searchURL("packages", strings.Repeat("a", 1001)), "at most 1000"},
		} {
			r.get(t, tc.path, "").wantErr(t, http.StatusUnprocessableEntity, tc.sub)
		}
	})
}

// Issue #9 point 21: GET /api/users, /api/paginated/users and a user's
// channel and package roles, with Quetz's permissions (elevated callers
// see everyone, others themselves).
func TestRESTUserLists(t *testing.T) { inHTTPModes(t, testRESTUserLists) }

func testRESTUserLists(t *testing.T, mode ...nodetest.Option) {
	r := newSearchRig(t, mode...)
	maint := r.newUser(t, "maint", "maintainer")
	r.addPackageMember(t, "pub-one", "beta-tool", "alice", "maintainer")
	// A scoped key has an anonymous user: never listed.
	r.do(t, "POST", "/api/api-keys", r.carol, map[string]any{"description": "scoped", "roles": []map[string]any{{"channel": "pub-one", "role": "member"}}}, nil).want(t, http.StatusCreated)

	usernames := func(l []map[string]any) []string {
		var out []string
		for _, u := range l {
			out = append(out, fmt.Sprint(u["username"]))
			if p, ok := u["profile"].(map[string]any); !ok || u["id"] == nil || p["name"] == nil && p["avatar_url"] == nil {
				t.Errorf("user %v: want id, username, profile{name, avatar_url}", u)
			}
		}
		return out
	}
	t.Run("users", func(t *testing.T) {
		r.get(t, "/api/users", "").wantErr(t, http.StatusUnauthorized, "Not logged in")
		r.get(t, "/api/paginated/users", "").wantErr(t, http.StatusUnauthorized, "Not logged in")
		for _, tc := range []struct {
			key, q string
			want   []string
		}{
			{maint, "", []string{"admin", "alice", "bob", "carol", "maint"}},
			{admin, "B", []string{"bob"}},
			{maint, "ali", []string{"alice"}},
			{r.alice, "", []string{"alice"}},
			{r.alice, "bob", nil},
			{r.carol, "", []string{"carol"}},
		} {
			got := usernames(r.get(t, "/api/users?q="+tc.q, tc.key).want(t, http.StatusOK).list(t))
			if !slices.Equal(got, tc.want) {
				t.Errorf("q=%q: got %v, want %v", tc.q, got, tc.want)
			}
		}
		var page struct {
			Pagination pageInfo         `json:"pagination"`
			Result     []map[string]any `json:"result"`
		}
		r.get(t, "/api/paginated/users?skip=1&limit=2", maint).want(t, http.StatusOK).decode(t, &page)
		if got := usernames(page.Result); !slices.Equal(got, []string{"alice", "bob"}) || page.Pagination.AllRecordsCount != 5 || page.Pagination.Skip != 1 || page.Pagination.Limit != 2 {
			t.Errorf("maintainer page: %+v %v", page.Pagination, got)
		}
		r.get(t, "/api/paginated/users", r.alice).want(t, http.StatusOK).decode(t, &page)
		if got := usernames(page.Result); !slices.Equal(got, []string{"alice"}) || page.Pagination.AllRecordsCount != 1 || page.Pagination.Limit != 20 {
			t.Errorf("alice page: %+v %v", page.Pagination, got)
		}
		r.get(t, "/api/paginated/users?limit=many", maint).want(t, http.StatusUnprocessableEntity)
	})

	t.Run("roles", func(t *testing.T) {
		for _, tc := range []struct {
			path, key string
			status    int
			want      string
		}{
			{"/api/users/alice/channels", r.alice, 200, `[{"name":"priv-two","role":"member"}]`},
			{"/api/users/alice/channels", maint, 200, `[{"name":"priv-two","role":"member"}]`},
			{"/api/users/carol/channels", r.carol, 200, `[{"name":"priv-two","role":"owner"},{"name":"pub-one","role":"owner"}]`},
			{"/api/users/bob/channels", r.bob, 200, `[]`},
			{"/api/users/alice/packages", r.alice, 200, `[{"name":"beta-tool","channel_name":"pub-one","role":"maintainer"}]`},
			{"/api/paginated/users/alice/channels", r.alice, 200, `{"pagination":{"skip":0,"limit":20,"all_records_count":1},"result":[{"name":"priv-two","role":"member"}]}`},
			{"/api/paginated/users/carol/channels?limit=1&skip=1", admin, 200, `{"pagination":{"skip":1,"limit":1,"all_records_count":2},"result":[{"name":"pub-one","role":"owner"}]}`},
			{"/api/paginated/users/alice/packages", r.alice, 200, `{"pagination":{"skip":0,"limit":20,"all_records_count":1},"result":[{"name":"beta-tool","channel_name":"pub-one","role":"maintainer"}]}`},
			{"/api/users/alice/channels", r.bob, 403, "requires owner or maintainer"},
			{"/api/users/alice/packages", r.carol, 403, "requires owner or maintainer"},
			{"/api/users/alice/channels", "", 401, "Not logged in"},
			{"/api/users/nobody/channels", maint, 404, "User nobody not found"},
		} {
			got := r.get(t, tc.path, tc.key)
			if tc.status != 200 {
				got.wantErr(t, tc.status, tc.want)
				continue
			}
			if got.want(t, 200); strings.TrimSpace(string(got.body)) != tc.want {
				t.Errorf("%s: got %s, want %s", tc.path, got.body, tc.want)
			}
		}
	})
}

// Issue #9 point 21: GET /api/paginated/channels/{c}/packages/{p}/versions.
func TestRESTPaginatedVersions(t *testing.T) { inHTTPModes(t, testRESTPaginatedVersions) }

func testRESTPaginatedVersions(t *testing.T, mode ...nodetest.Option) {
	r := newSearchRig(t, mode...)
	var page struct {
		Pagination pageInfo         `json:"pagination"`
		Result     []map[string]any `json:"result"`
	}
	r.get(t, "/api/paginated/channels/pub-one/packages/alpha-lib/versions?limit=1", "").want(t, http.StatusOK).decode(t, &page)
	if page.Pagination.AllRecordsCount != 2 || page.Pagination.Limit != 1 || len(page.Result) != 1 || page.Result[0]["version"] != "1.2" {
		t.Errorf("first page: %+v %v", page.Pagination, page.Result)
	}
	all := r.get(t, "/api/channels/pub-one/packages/alpha-lib/versions", "").want(t, http.StatusOK).list(t)
	r.get(t, "/api/paginated/channels/pub-one/packages/alpha-lib/versions?skip=1", "").want(t, http.StatusOK).decode(t, &page)
	if len(page.Result) != 1 || fmt.Sprint(page.Result[0]) != fmt.Sprint(all[1]) {
		t.Errorf("second page %v, want %v", page.Result, all[1])
	}
	r.get(t, "/api/paginated/channels/priv-two/packages/alpha-secret/versions", "").wantErr(t, http.StatusUnauthorized, "Not logged in")
	r.get(t, "/api/paginated/channels/priv-two/packages/alpha-secret/versions", r.bob).wantErr(t, http.StatusForbidden, "No permission")
	r.get(t, "/api/paginated/channels/priv-two/packages/alpha-secret/versions", r.alice).want(t, http.StatusOK)
	r.get(t, "/api/paginated/channels/pub-one/packages/nothing/versions", "").wantErr(t, http.StatusNotFound, "Package pub-one/nothing not found")
	r.get(t, "/api/paginated/channels/pub-one/packages/alpha-lib/versions?skip=x", "").want(t, http.StatusUnprocessableEntity)
}

// Issue #9 point 22: DELETE /api/channels/{c}/members without ?username= is
// FastAPI's 422 for a missing query parameter, not a 404 for user "".
func TestRESTRemoveMemberNeedsUsername(t *testing.T) {
	inHTTPModes(t, testRESTRemoveMemberNeedsUsername)
}

func testRESTRemoveMemberNeedsUsername(t *testing.T, mode ...nodetest.Option) {
	r := newSearchRig(t, mode...)
	res := r.do(t, "DELETE", "/api/channels/priv-two/members", r.carol, nil, nil).wantErr(t, http.StatusUnprocessableEntity, "Field required")
	if d := string(res.detailList(t)[0]); !strings.Contains(d, `"loc":["query","username"]`) || !strings.Contains(d, `"type":"missing"`) {
		t.Errorf("detail %s: want loc [query, username], type missing", d)
	}
	r.do(t, "DELETE", "/api/channels/nothing/members", r.carol, nil, nil).wantErr(t, http.StatusNotFound, "Channel nothing not found")
	r.do(t, "DELETE", "/api/channels/priv-two/members?username=alice", r.carol, nil, nil).want(t, http.StatusOK)
	r.do(t, "DELETE", "/api/channels/priv-two/members?username=alice", r.carol, nil, nil).wantErr(t, http.StatusNotFound, "not a member")
}
