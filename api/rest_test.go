package api_test

// Black-box tests of the Quetz-compatible REST API against a real node.
// Case numbers refer to ../shared/spec/quetz-api.md §10.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/dsnet/compress/bzip2"
	"github.com/klauspost/compress/zstd"
)

// upstream records every request a mirror or proxy channel would make.
// Creating them with "actions": [] must make none.
type upstream struct {
	*httptest.Server
	hits atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		t.Errorf("unexpected upstream request %s %s", r.Method, r.URL)
		http.NotFound(w, r)
	}))
	t.Cleanup(u.Close)
	return u
}

func TestRESTChannels(t *testing.T) { inHTTPModes(t, testRESTChannels) }

func testRESTChannels(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	up := newUpstream(t)
	keys := map[string]string{
		"owner":      e.newUser(t, "sowner", "owner"),
		"maintainer": e.newUser(t, "smaint", "maintainer"),
		"member":     e.newUser(t, "smember", "member"),
		"none":       e.newUser(t, "snone", ""),
	}
	sowner, smaint, smember, snone := keys["owner"], keys["maintainer"], keys["member"], keys["none"]

	// 1. Local channels: any server role may create, no role may not.
	t.Run("create by server role", func(t *testing.T) {
		for _, tc := range []struct {
			role string
			want int
		}{{"owner", 201}, {"maintainer", 201}, {"member", 201}, {"none", 403}} {
			t.Run(tc.role, func(t *testing.T) {
				name := "create-by-" + tc.role
				r := e.do(t, "POST", "/api/channels", keys[tc.role], map[string]any{"name": name, "private": false}, nil).want(t, tc.want)
				if tc.want == 201 {
					if string(bytes.TrimSpace(r.body)) != "null" {
						t.Errorf("201 body = %s, want null", r.body)
					}
					e.get(t, "/api/channels/"+name, "").want(t, 200)
					return
				}
				if d := r.detailList(t); !strings.Contains(string(d[0]), "requires") {
					t.Errorf("detail[0] = %s", d[0])
				}
				e.get(t, "/api/channels/"+name, admin).wantErr(t, 404, "Channel "+name+" not found")
			})
		}
		e.do(t, "POST", "/api/channels", "", map[string]any{"name": "create-anon"}, nil).wantErr(t, 401, "Not logged in")
	})

	// 2, 3 (no quota configured → null), 4.
	t.Run("size_limit and ttl at creation", func(t *testing.T) {
		for _, tc := range []struct {
			role string
			want int
		}{{"owner", 201}, {"maintainer", 201}, {"member", 403}} {
			t.Run(tc.role, func(t *testing.T) {
				name := "limit-by-" + tc.role
				r := e.do(t, "POST", "/api/channels", keys[tc.role], map[string]any{"name": name, "private": false, "size_limit": 101}, nil).want(t, tc.want)
				if tc.want == 403 {
					var d []string
					if err := json.Unmarshal(r.body, &struct{ Detail *[]string }{&d}); err != nil || len(d) != 1 || !strings.Contains(d[0], "set channel size limit") {
						t.Errorf("%v: want detail [\"...set channel size limit\"]", r)
					}
					e.get(t, "/api/channels/"+name, admin).want(t, 404)
					return
				}
				if got := e.get(t, "/api/channels/"+name, "").want(t, 200).obj(t)["size_limit"]; got != 101.0 {
					t.Errorf("size_limit = %v, want 101", got)
				}
			})
		}
		e.newChannel(t, "defaults", false, smember)
		ch := e.get(t, "/api/channels/defaults", "").want(t, 200).obj(t)
		if ch["size_limit"] != nil || ch["ttl"] != 36000.0 || ch["mirror_channel_url"] != nil || ch["mirror_mode"] != nil {
			t.Errorf("defaults: %v; want size_limit null, ttl 36000, no mirror fields", ch)
		}
		e.do(t, "POST", "/api/channels", smember, map[string]any{"name": "short-ttl", "ttl": 1200}, nil).want(t, 201)
		if ch := e.get(t, "/api/channels/short-ttl", smember).want(t, 200).obj(t); ch["ttl"] != 1200.0 || ch["private"] != true {
			t.Errorf("short-ttl: %v; want ttl 1200 and private (the default)", ch)
		}
	})

	// 5, 6.
	t.Run("case-insensitive names", func(t *testing.T) {
		e.newChannel(t, "MyChannel", false, admin)
		for _, n := range []string{"MyChannel", "mychannel", "MYCHANNEL"} {
			if got := e.get(t, "/api/channels/"+n, "").want(t, 200).obj(t)["name"]; got != "MyChannel" {
				t.Errorf("GET %s: name = %v", n, got)
			}
		}
		spec := pkgSpec("case-pkg", "1.0", "linux-64")
		file := condatest.Filename(spec, ".tar.bz2")
		data := condatest.TarBz2(t, spec)
		e.upload(t, admin, "mychannel", file, data).want(t, 201)
		for _, n := range []string{"MyChannel", "mychannel"} {
			if got := names(e.get(t, "/api/channels/"+n+"/packages", "").want(t, 200).list(t)); !slices.Equal(got, []string{"case-pkg"}) {
				t.Errorf("%s packages = %v", n, got)
			}
			e.get(t, "/api/channels/"+n+"/packages/case-pkg/versions", "").want(t, 200)
			if _, ok := e.repodata(t, n, "linux-64", "")[file]; !ok {
				t.Errorf("%s/linux-64/repodata.json lacks %s", n, file)
			}
			e.indexes(t, n) // the root index may lag one write behind (indexer race, see report)
			if r := e.get(t, "/get/"+n, "").want(t, 200); !strings.Contains(string(r.body), "case-pkg") {
				t.Errorf("/get/%s index.html does not list case-pkg", n)
			}
			if r := e.get(t, "/get/"+n+"/linux-64/"+file, "").want(t, 200); !bytes.Equal(r.body, data) {
				t.Errorf("/get/%s/linux-64/%s: wrong bytes", n, file)
			}
		}
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "mychannel"}, nil).wantErr(t, 409, "mychannel exists")
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "MYCHANNEL"}, nil).wantErr(t, 409, "MYCHANNEL exists")
	})

	// 7, 8 and the other name rules.
	t.Run("channel name rules", func(t *testing.T) {
		r := e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "검은맘바", "private": false}, nil).want(t, 422)
		if d := r.detail(t); d != "only ASCII characters should be used in channel name" {
			t.Errorf("detail = %q", d)
		}
		for _, tc := range []struct{ name, want string }{
			{"żmija", "only ASCII characters"},
			{"grün", "only ASCII characters"},
			{"under_score", "_ should not be used in channel name"},
			{strings.Repeat("a", 51), "at most 50 characters"},
		} {
			e.do(t, "POST", "/api/channels", admin, map[string]any{"name": tc.name, "private": false}, nil).wantErr(t, 422, tc.want)
		}
		e.newChannel(t, "zmija", false, admin)
		e.newChannel(t, "grun", false, admin)
		all := names(e.get(t, "/api/channels", admin).want(t, 200).list(t))
		for _, n := range []string{"zmija", "grun"} {
			if !slices.Contains(all, n) {
				t.Errorf("listing lacks %s: %v", n, all)
			}
		}
		for _, n := range []string{"검은맘바", "żmija", "grün", "under_score"} {
			if slices.Contains(all, n) {
				t.Errorf("listing has refused channel %s", n)
			}
			e.get(t, "/api/channels/"+url.PathEscape(n), admin).wantErr(t, 404, "Channel "+n+" not found")
		}
	})

	// 9 (DELETE) and 18 (PATCH private): who may change a channel.
	changers := []struct {
		who    string
		key    string
		user   string // gets chRole on the channel first
		chRole string
		want   int
	}{
		{"S owner", sowner, "", "", 200},
		{"S maintainer", smaint, "", "", 200},
		{"C owner, S none", snone, "snone", "owner", 200},
		{"C maintainer, S member", smember, "smember", "maintainer", 200},
		{"C member, S member", smember, "smember", "member", 403},
		{"C member, S none", snone, "snone", "member", 403},
		{"S member, no C role", smember, "", "", 403},
		{"no roles", snone, "", "", 403},
		{"anonymous", "", "", "", 401},
	}
	t.Run("delete permissions", func(t *testing.T) {
		for i, tc := range changers {
			t.Run(tc.who, func(t *testing.T) {
				name := fmt.Sprintf("del-%d", i)
				e.newChannel(t, name, false, admin)
				if tc.chRole != "" {
					e.addMember(t, name, tc.user, tc.chRole)
				}
				e.do(t, "DELETE", "/api/channels/"+name, tc.key, nil, nil).want(t, tc.want)
				if tc.want == 200 {
					e.get(t, "/api/channels/"+name, admin).want(t, 404)
				} else {
					e.get(t, "/api/channels/"+name, admin).want(t, 200)
				}
			})
		}
	})
	t.Run("patch private permissions", func(t *testing.T) {
		for i, tc := range changers {
			t.Run(tc.who, func(t *testing.T) {
				name := fmt.Sprintf("patch-%d", i)
				e.newChannel(t, name, true, admin)
				if tc.chRole != "" {
					e.addMember(t, name, tc.user, tc.chRole)
				}
				want := tc.want
				r := e.do(t, "PATCH", "/api/channels/"+name, tc.key, map[string]any{"private": false}, nil).want(t, want)
				private := e.get(t, "/api/channels/"+name, admin).want(t, 200).obj(t)["private"]
				if want == 200 {
					if b := r.obj(t); b["private"] != false || b["name"] != name {
						t.Errorf("PATCH body = %s", r.body)
					}
					if private != false {
						t.Errorf("channel still private")
					}
				} else if private != true {
					t.Errorf("refused PATCH changed private to %v", private)
				}
			})
		}
	})

	// 10. Deleting a channel deletes its packages, versions and files.
	t.Run("delete channel with packages", func(t *testing.T) {
		e.newChannel(t, "full", false, admin)
		spec := pkgSpec("full-pkg", "1.0", "linux-64")
		file := condatest.Filename(spec, ".conda")
		e.upload(t, admin, "full", file, condatest.Conda(t, spec)).want(t, 201)
		e.get(t, "/get/full/linux-64/"+file, "").want(t, 200)
		e.do(t, "DELETE", "/api/channels/full", admin, nil, nil).want(t, 200)
		e.get(t, "/api/channels/full", admin).wantErr(t, 404, "Channel full not found")
		e.get(t, "/api/channels/full/packages", admin).want(t, 404)
		e.get(t, "/api/channels/full/packages/full-pkg/versions", admin).want(t, 404)
		e.get(t, "/get/full/linux-64/"+file, admin).want(t, 404)
		e.get(t, "/get/full/linux-64/repodata.json", admin).want(t, 404)
		// A new channel of the same name starts empty.
		e.newChannel(t, "full", false, admin)
		if l := e.get(t, "/api/channels/full/packages", "").want(t, 200).list(t); len(l) != 0 {
			t.Errorf("recreated channel has packages %v", l)
		}
		e.get(t, "/get/full/linux-64/"+file, "").want(t, 404)
		if rd := e.repodata(t, "full", "noarch", ""); len(rd) != 0 {
			t.Errorf("recreated channel repodata %v", rd)
		}
		e.get(t, "/api/channels/full/packages/full-pkg", "").wantErr(t, 404, "Package full/full-pkg not found")
	})

	// 11, 12. Reading a private channel.
	t.Run("private channel read", func(t *testing.T) {
		okey := e.newUser(t, "prv-owner", "member")
		reader := e.newUser(t, "prv-reader", "")
		pkgReader := e.newUser(t, "prv-pkgreader", "")
		e.newChannel(t, "priv", true, okey)
		e.addMember(t, "priv", "prv-reader", "member")
		spec := pkgSpec("pp", "1.0", "noarch")
		e.upload(t, okey, "priv", condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)).want(t, 201)
		e.addPackageMember(t, "priv", "pp", "prv-pkgreader", "member")
		paths := []string{"/api/channels/priv", "/api/channels/priv/packages", "/api/channels/priv/packages/pp",
			"/api/channels/priv/packages/pp/versions", "/api/channels/priv/packages/pp/members"}
		for _, tc := range []struct {
			who, key string
			want     int
		}{
			{"S owner", sowner, 200}, {"S maintainer", smaint, 200}, {"C owner", okey, 200}, {"C member", reader, 200},
			{"S member", smember, 403}, {"no role", snone, 403}, {"anonymous", "", 401},
		} {
			for _, p := range paths {
				r := e.get(t, p, tc.key).want(t, tc.want)
				if tc.want == 403 {
					r.wantErr(t, 403, "No permission")
				}
			}
		}
		// A package member reads the package but not the channel.
		e.get(t, "/api/channels/priv/packages/pp", pkgReader).want(t, 200)
		e.get(t, "/api/channels/priv/packages/pp/versions", pkgReader).want(t, 200)
		e.get(t, "/api/channels/priv", pkgReader).want(t, 403)
	})
	t.Run("channel members listing", func(t *testing.T) {
		okey := e.newUser(t, "mem-owner", "member")
		mkey := e.newUser(t, "mem-maint", "")
		e.newChannel(t, "pubmembers", false, okey)
		e.addMember(t, "pubmembers", "mem-maint", "maintainer")
		e.get(t, "/api/channels/pubmembers/members", "").wantErr(t, 401, "Not logged in")
		e.get(t, "/api/channels/pubmembers/members", snone).wantErr(t, 403, "No permission")
		l := e.get(t, "/api/channels/pubmembers/members", mkey).want(t, 200).list(t)
		got := map[string]string{}
		for _, m := range l {
			u, _ := m["user"].(map[string]any)
			got[fmt.Sprint(u["username"])] = fmt.Sprint(m["role"])
			if _, ok := u["profile"].(map[string]any); !ok || u["id"] == nil {
				t.Errorf("member user shape: %v", u)
			}
		}
		if len(got) != 2 || got["mem-owner"] != "owner" || got["mem-maint"] != "maintainer" {
			t.Errorf("members = %v", got)
		}
		e.do(t, "POST", "/api/channels/pubmembers/members", admin, map[string]any{"username": "ghost", "role": "member"}, nil).wantErr(t, 404, "user ghost not found")
		e.do(t, "POST", "/api/channels/pubmembers/members", admin, map[string]any{"username": "snone", "role": "invalid"}, nil).want(t, 422)
		// Fixed Quetz defect (§12): the role pattern is anchored.
		e.do(t, "POST", "/api/channels/pubmembers/members", admin, map[string]any{"username": "snone", "role": "not-an-owner"}, nil).want(t, 422)
		e.do(t, "POST", "/api/channels/pubmembers/members", mkey, map[string]any{"username": "snone", "role": "member"}, nil).wantErr(t, 403, "No permission")
		e.do(t, "DELETE", "/api/channels/pubmembers/members?username=snone", okey, nil, nil).wantErr(t, 404, "user snone is not a member of channel pubmembers")
	})

	// 13. Listing visibility with public=1/0, both list routes.
	t.Run("listing visibility", func(t *testing.T) {
		okey := e.newUser(t, "vis-owner", "member")
		mkey := e.newUser(t, "vis-member", "")
		e.newChannel(t, "vis-public", false, admin)
		e.newChannel(t, "vis-own", true, okey)
		e.newChannel(t, "vis-other", true, admin)
		e.addMember(t, "vis-other", "vis-member", "member")
		for _, tc := range []struct {
			who, key, public string
			want             []string
		}{
			{"owner public=1", okey, "1", []string{"vis-own", "vis-public"}},
			{"owner default", okey, "", []string{"vis-own", "vis-public"}},
			{"owner public=0", okey, "0", []string{"vis-own"}},
			{"anonymous", "", "1", []string{"vis-public"}},
			{"anonymous public=0", "", "0", []string{"vis-public"}},
			{"member key", mkey, "1", []string{"vis-other", "vis-public"}},
			{"member key public=0", mkey, "0", []string{"vis-other"}},
			{"non-member key", snone, "1", []string{"vis-public"}},
			// Elevated users get no extra visibility in listings.
			{"server owner", sowner, "1", []string{"vis-public"}},
		} {
			t.Run(tc.who, func(t *testing.T) {
				q := "?q=VIS-"
				if tc.public != "" {
					q += "&public=" + tc.public
				}
				if got := names(e.get(t, "/api/channels"+q, tc.key).want(t, 200).list(t)); !slices.Equal(got, tc.want) {
					t.Errorf("/api/channels%s = %v, want %v", q, got, tc.want)
				}
				var pg struct {
					Pagination struct {
						AllRecordsCount int `json:"all_records_count"`
					} `json:"pagination"`
					Result []map[string]any `json:"result"`
				}
				e.get(t, "/api/paginated/channels"+q, tc.key).want(t, 200).decode(t, &pg)
				if got := names(pg.Result); !slices.Equal(got, tc.want) || pg.Pagination.AllRecordsCount != len(tc.want) {
					t.Errorf("/api/paginated/channels%s = %v (count %d), want %v", q, got, pg.Pagination.AllRecordsCount, tc.want)
				}
			})
		}
		e.get(t, "/api/channels?public=maybe", "").want(t, 422)
	})

	// 14. members_count and packages_count.
	t.Run("counts", func(t *testing.T) {
		e.newChannel(t, "cnt-a", false, admin)
		e.newChannel(t, "cnt-b", false, admin)
		check := func(wantMembers, wantPackages float64) {
			t.Helper()
			single := e.get(t, "/api/channels/cnt-a", "").want(t, 200).obj(t)
			listed := e.get(t, "/api/channels?q=cnt-a", "").want(t, 200).list(t)
			if len(listed) != 1 {
				t.Fatalf("listing cnt-a: %v", listed)
			}
			for _, ch := range []map[string]any{single, listed[0]} {
				if ch["members_count"] != wantMembers || ch["packages_count"] != wantPackages {
					t.Errorf("counts = %v/%v, want %v/%v", ch["members_count"], ch["packages_count"], wantMembers, wantPackages)
				}
			}
		}
		check(1, 0)
		e.do(t, "POST", "/api/channels/cnt-a/packages", admin, map[string]any{"name": "counted"}, nil).want(t, 201)
		check(1, 1)
		e.do(t, "POST", "/api/channels/cnt-b/packages", admin, map[string]any{"name": "elsewhere"}, nil).want(t, 201)
		check(1, 1)
		e.addMember(t, "cnt-a", "snone", "member")
		check(2, 1)
	})

	// 15, 16, 17.
	t.Run("patch", func(t *testing.T) {
		okey := e.newUser(t, "patch-owner", "member")
		e.newChannel(t, "patchme", false, okey)
		r := e.do(t, "PATCH", "/api/channels/patchme", admin, map[string]any{"size_limit": 101}, nil).want(t, 200).obj(t)
		if r["name"] != "patchme" || r["size_limit"] != 101.0 {
			t.Errorf("PATCH size_limit: %v", r)
		}
		if _, ok := r["members_count"]; ok {
			t.Errorf("PATCH returns ChannelBase, got counts: %v", r)
		}
		// A channel owner without a server role may not set the quota.
		var d []string
		rr := e.do(t, "PATCH", "/api/channels/patchme", okey, map[string]any{"size_limit": 5}, nil).want(t, 403)
		if json.Unmarshal(rr.body, &struct{ Detail *[]string }{&d}) != nil || len(d) != 1 || !strings.Contains(d[0], "set channel size limit") {
			t.Errorf("%v: want list detail about the size limit", rr)
		}
		if r := e.do(t, "PATCH", "/api/channels/patchme", okey, map[string]any{"ttl": 1200}, nil).want(t, 200).obj(t); r["ttl"] != 1200.0 {
			t.Errorf("PATCH ttl: %v", r)
		}
		if r := e.do(t, "PATCH", "/api/channels/patchme", okey, map[string]any{"private": true}, nil).want(t, 200).obj(t); r["private"] != true || r["ttl"] != 1200.0 || r["size_limit"] != 101.0 {
			t.Errorf("PATCH private: %v", r)
		}
		for _, body := range []map[string]any{
			{"name": "new-name"},
			{"mirror_channel_url": "http://test", "mirror_mode": "proxy"},
			{"description": "d"},
			{"actions": []string{}},
		} {
			e.do(t, "PATCH", "/api/channels/patchme", admin, body, nil).wantErr(t, 422, "can not be changed")
		}
		e.get(t, "/api/channels/new-name", admin).want(t, 404)
		// null is no boolean: it must not make the channel public.
		e.do(t, "PATCH", "/api/channels/patchme", admin, map[string]any{"private": nil}, nil).wantErr(t, 422, "valid boolean")
		e.do(t, "PATCH", "/api/channels/patchme", admin, map[string]any{"private": "no"}, nil).wantErr(t, 422, "valid boolean")
		if ch := e.get(t, "/api/channels/patchme", admin).want(t, 200).obj(t); ch["private"] != true {
			t.Errorf("refused PATCH made the channel public: %v", ch)
		}
		// size_limit null removes the limit (Quetz stores the null).
		if r := e.do(t, "PATCH", "/api/channels/patchme", admin, map[string]any{"size_limit": nil}, nil).want(t, 200).obj(t); r["size_limit"] != nil {
			t.Errorf("PATCH size_limit null: %v", r)
		}
		if ch := e.get(t, "/api/channels/patchme", admin).want(t, 200).obj(t); ch["size_limit"] != nil || ch["ttl"] != 1200.0 {
			t.Errorf("after PATCH size_limit null: %v", ch)
		}
		e.do(t, "PATCH", "/api/channels/patchme", okey, map[string]any{"size_limit": nil}, nil).want(t, 403)
		if ch := e.get(t, "/api/channels/patchme", admin).want(t, 200).obj(t); ch["mirror_channel_url"] != nil || ch["description"] != nil {
			t.Errorf("refused PATCH changed the channel: %v", ch)
		}
		e.do(t, "PATCH", "/api/channels/nope", admin, map[string]any{"ttl": 1}, nil).wantErr(t, 404, "Channel nope not found")
		e.do(t, "DELETE", "/api/channels/nope", admin, nil, nil).wantErr(t, 404, "Channel nope not found")
	})

	// 19, 20, 21, 22, 23. Mirror and proxy channels are created without any
	// upstream traffic ("actions": []; proxies have no initial action).
	t.Run("mirror and proxy creation", func(t *testing.T) {
		for _, mode := range []string{"proxy", "mirror"} {
			for _, tc := range []struct {
				role string
				want int
			}{{"owner", 201}, {"maintainer", 201}, {"member", 403}, {"none", 403}} {
				name := mode + "-by-" + tc.role
				r := e.do(t, "POST", "/api/channels", keys[tc.role], map[string]any{
					"name": name, "private": false, "mirror_channel_url": up.URL + "/" + name, "mirror_mode": mode, "actions": []string{},
				}, nil).want(t, tc.want)
				if tc.want == 403 {
					if d := r.detailList(t); !strings.Contains(string(d[0]), "owner or maintainer") {
						t.Errorf("%s: detail %s", name, d[0])
					}
					e.get(t, "/api/channels/"+name, admin).want(t, 404)
				}
			}
		}
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "proxy-remote", "private": false, "mirror_channel_url": "http://my_remote_host", "mirror_mode": "proxy"}, nil).want(t, 201)
		ch := e.get(t, "/api/channels/proxy-remote", "").want(t, 200).obj(t)
		if ch["mirror_channel_url"] != "http://my_remote_host" || ch["mirror_mode"] != "proxy" {
			t.Errorf("proxy channel: %v", ch)
		}
		if _, ok := ch["metadata"]; ok {
			t.Errorf("metadata must not be returned: %v", ch)
		}
		for i, tc := range []struct {
			url, mode any
			want      string // "" = 201
		}{
			{nil, "proxy", "'mirror_channel_url' is undefined"},
			{"http://my-host", nil, "'mirror_mode' is undefined"},
			{"http://my-host", "undefined", "Input should be 'proxy' or 'mirror'"},
			{"my-host", "proxy", "String should match pattern"},
			{"http://", "proxy", "String should match pattern"},
			{"http:my-host", "proxy", "String should match pattern"},
			{"hosthttp://my-host", "proxy", "String should match pattern"},
			{nil, nil, ""},
			{"http://my-host", "proxy", ""},
			{"https://my-host", "proxy", ""},
			{"http://my-host", "mirror", ""},
			{"http://my-host/me/url", "mirror", ""},
		} {
			name := fmt.Sprintf("mirror-args-%d", i)
			body := map[string]any{"name": name, "actions": []string{}}
			if tc.url != nil {
				body["mirror_channel_url"] = tc.url
			}
			if tc.mode != nil {
				body["mirror_mode"] = tc.mode
			}
			r := e.do(t, "POST", "/api/channels", admin, body, nil)
			if tc.want == "" {
				r.want(t, 201)
				continue
			}
			r.want(t, 422)
			var fe struct {
				Msg string `json:"msg"`
			}
			if err := json.Unmarshal(r.detailList(t)[0], &fe); err != nil || !strings.Contains(fe.Msg, tc.want) {
				t.Errorf("%v: detail[0].msg lacks %q", r, tc.want)
			}
			e.get(t, "/api/channels/"+name, admin).want(t, 404)
		}
		e.do(t, "POST", "/api/channels", admin, map[string]any{
			"name": "both-lists", "mirror_channel_url": up.URL, "mirror_mode": "mirror", "actions": []string{},
			"metadata": map[string]any{"includelist": []string{}, "excludelist": []string{}},
		}, nil).wantErr(t, 422, "Cannot use both `includelist` and `excludelist` together.")
		e.get(t, "/api/channels/both-lists", admin).want(t, 404)
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "bad-action", "actions": []string{"format_disk"}}, nil).want(t, 422)
		e.get(t, "/api/channels/bad-action", admin).want(t, 404)
	})

	// 32, 33, 34: writes refused on mirror and proxy channels, reads work.
	t.Run("mirror and proxy refuse writes", func(t *testing.T) {
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "px", "private": false, "mirror_channel_url": up.URL, "mirror_mode": "proxy"}, nil).want(t, 201)
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "mx", "private": false, "mirror_channel_url": up.URL, "mirror_mode": "mirror", "actions": []string{}}, nil).want(t, 201)
		before := e.snapshot(t, "mx", "linux-64")
		spec := pkgSpec("mpkg", "1.0", "linux-64")
		file := condatest.Filename(spec, ".tar.bz2")
		data := condatest.TarBz2(t, spec)
		for _, ch := range []string{"px", "mx"} {
			kind := map[string]string{"px": "proxy", "mx": "mirror"}[ch]
			msg := "This method is not implemented for " + kind + " channels"
			e.do(t, "POST", "/api/channels/"+ch+"/packages", admin, map[string]any{"name": "mpkg"}, nil).wantErr(t, 405, msg)
			// The guard runs before authentication.
			e.do(t, "POST", "/api/channels/"+ch+"/packages", "", map[string]any{"name": "mpkg"}, nil).wantErr(t, 405, msg)
			e.upload(t, admin, ch, file, data).wantErr(t, 405, msg)
			e.upload(t, "", ch, file, data).wantErr(t, 405, msg)
			// Quetz checks the package first.
			e.uploadFiles(t, admin, ch, "mpkg", map[string][]byte{file: data}, false).wantErr(t, 404, "Package "+ch+"/mpkg not found")
			// Fixed Quetz defect (§12): /upload/ is guarded like files/.
			e.uploadRaw(t, admin, ch, file, data, sha256Hex(data), false).wantErr(t, 405, msg)
		}
		e.unchanged(t, "mx", before)
		// 33: the mirror's read API works.
		if l := e.get(t, "/api/channels/mx/packages", "").want(t, 200).list(t); len(l) != 0 {
			t.Errorf("mirror packages = %v", l)
		}
		e.get(t, "/get/mx/missing/path/file.json", "").wantErr(t, 404, "file.json not found")
		e.get(t, "/api/channels/px/packages", "").wantErr(t, 405, "not implemented for proxy channels")
		e.get(t, "/api/channels/px/members", admin).wantErr(t, 405, "not implemented for proxy channels")
		// Fixed Quetz defect (§12): a proxy's ttl/private/metadata can be changed.
		if r := e.do(t, "PATCH", "/api/channels/px", admin, map[string]any{"ttl": 60}, nil).want(t, 200).obj(t); r["ttl"] != 60.0 {
			t.Errorf("PATCH proxy ttl: %v", r)
		}
		// 34: a local channel accepts package creation from a channel maintainer.
		mkey := e.newUser(t, "local-maint", "")
		e.newChannel(t, "local-pkgs", false, admin)
		e.addMember(t, "local-pkgs", "local-maint", "maintainer")
		e.do(t, "POST", "/api/channels/local-pkgs/packages", mkey, map[string]any{"name": "my_package"}, nil).want(t, 201)
		e.get(t, "/api/channels/local-pkgs/packages/my_package", "").want(t, 200)
	})

	// 66 (empty channel): the index files exist right after creation.
	t.Run("index files of a new channel", func(t *testing.T) {
		e.newChannel(t, "fresh-idx", false, admin)
		for _, p := range []string{"channeldata.json", "index.html", "noarch/index.html", "noarch/repodata.json",
			"noarch/repodata.json.zst", "noarch/repodata.json.bz2", "noarch/current_repodata.json",
			"noarch/current_repodata.json.zst", "noarch/repodata_shards.msgpack.zst"} {
			e.get(t, "/get/fresh-idx/"+p, "").want(t, 200)
		}
		var cd struct {
			Version  int            `json:"channeldata_version"`
			Packages map[string]any `json:"packages"`
			Subdirs  []string       `json:"subdirs"`
		}
		e.get(t, "/get/fresh-idx/channeldata.json", "").decode(t, &cd)
		if cd.Version != 1 || len(cd.Packages) != 0 || !slices.Contains(cd.Subdirs, "noarch") {
			t.Errorf("channeldata = %+v", cd)
		}
		rd := e.get(t, "/get/fresh-idx/noarch/repodata.json", "").want(t, 200)
		var doc struct {
			Info    map[string]any `json:"info"`
			Version int            `json:"repodata_version"`
		}
		rd.decode(t, &doc)
		if doc.Info["subdir"] != "noarch" || doc.Version != 1 {
			t.Errorf("repodata.json = %s", rd.body)
		}
		checkCompressed(t, e, "fresh-idx", "noarch", rd.body)
		e.get(t, "/get/fresh-idx/linux-64/repodata.json", "").wantErr(t, 404, "fresh-idx/linux-64/repodata.json not found")
	})

	t.Run("trailing slash redirects", func(t *testing.T) {
		r := e.do(t, "GET", "/api/channels/fresh-idx/members/", admin, nil, nil).want(t, 307)
		if loc := r.header.Get("Location"); loc != "/api/channels/fresh-idx/members" {
			t.Errorf("Location = %q", loc)
		}
		r = e.do(t, "POST", "/api/channels/fresh-idx/files", admin, nil, nil).want(t, 307)
		if loc := r.header.Get("Location"); loc != "/api/channels/fresh-idx/files/" {
			t.Errorf("Location = %q", loc)
		}
		e.get(t, "/api/no-such-route", "").wantErr(t, 404, "Not Found")
		e.get(t, "/api/no-such-route/", "").wantErr(t, 404, "Not Found")
		e.get(t, "/no-such-page", "").want(t, 404)
		e.get(t, "/no-such-page/", "").want(t, 404)
		e.get(t, "/health/live/", "").want(t, 307)
		// 31: an existing path with another method.
		e.do(t, "PUT", "/api/channels/fresh-idx", admin, map[string]any{}, nil).want(t, 405)
	})

	if n := up.hits.Load(); n != 0 {
		t.Errorf("mirror/proxy channels made %d upstream requests", n)
	}
}

// checkCompressed checks that repodata.json.zst and .bz2 decompress to
// repodata.json.
func checkCompressed(t *testing.T, e *env, ch, subdir string, want []byte) {
	t.Helper()
	zr := e.get(t, "/get/"+ch+"/"+subdir+"/repodata.json.zst", "").want(t, 200)
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	got, err := dec.DecodeAll(zr.body, nil)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("repodata.json.zst does not decompress to repodata.json (err %v)", err)
	}
	br := e.get(t, "/get/"+ch+"/"+subdir+"/repodata.json.bz2", "").want(t, 200)
	r, err := bzip2.NewReader(bytes.NewReader(br.body), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("repodata.json.bz2 does not decompress to repodata.json (err %v)", err)
	}
}

// 3. A configured default quota becomes the size_limit of new channels
// that do not set one.
func TestRESTDefaultChannelQuota(t *testing.T) { inHTTPModes(t, testRESTDefaultChannelQuota) }

func testRESTDefaultChannelQuota(t *testing.T, mode ...nodetest.Option) {
	e := startIn(t, mode, func(c *node.Config) { c.API.DefaultChannelQuota = 100 })
	e.newChannel(t, "quota-default", false, admin)
	if got := e.get(t, "/api/channels/quota-default", "").want(t, 200).obj(t)["size_limit"]; got != 100.0 {
		t.Errorf("size_limit = %v, want 100", got)
	}
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "quota-explicit", "size_limit": 5000}, nil).want(t, 201)
	if got := e.get(t, "/api/channels/quota-explicit", admin).want(t, 200).obj(t)["size_limit"]; got != 5000.0 {
		t.Errorf("size_limit = %v, want 5000", got)
	}
	// The default quota is enforced.
	spec := pkgSpec("big", "1.0", "noarch")
	e.upload(t, admin, "quota-default", condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)).wantErr(t, 422, "quota")
}
