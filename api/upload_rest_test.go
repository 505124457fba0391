package api_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
)

// channelSize is the size the catalog accounts for a channel (quota).
func (e *env) channelSize(t testing.TB, ch string) int64 {
	t.Helper()
	c, err := e.n.Catalog().Channel(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	return c.Size
}

func md5Hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

// Cases 51-63 and 66 of quetz-api.md §10.
func TestRESTUploads(t *testing.T) { inHTTPModes(t, testRESTUploads) }

func testRESTUploads(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	cowner := e.newUser(t, "up-cowner", "")
	cmaint := e.newUser(t, "up-cmaint", "")
	cmember := e.newUser(t, "up-cmember", "member")
	none := e.newUser(t, "up-none", "")
	smaint := e.newUser(t, "up-smaint", "maintainer")
	// roles on a channel as table rows
	setRoles := func(t *testing.T, ch string) {
		e.addMember(t, ch, "up-cowner", "owner")
		e.addMember(t, ch, "up-cmaint", "maintainer")
		e.addMember(t, ch, "up-cmember", "member")
	}

	test := pkgSpec("test-package", "0.1", "linux-64")
	testFile := condatest.Filename(test, ".tar.bz2")
	testData := condatest.TarBz2(t, test)

	// 51.
	t.Run("not a bzip2 file", func(t *testing.T) {
		e.newChannel(t, "bz", false, admin)
		before := e.snapshot(t, "bz")
		for _, name := range []string{"my_package-0.1-0.tar.bz", "my_package-0.1-0.tar.bz2"} {
			e.uploadFiles(t, admin, "bz", "", map[string][]byte{name: []byte("dfdf")}, false).wantErr(t, 400, "not a bzip2 file")
		}
		e.unchanged(t, "bz", before)
	})

	// 52, 66 (with a package).
	t.Run("upload via files", func(t *testing.T) {
		e.newChannel(t, "up", false, admin)
		e.upload(t, admin, "up", testFile, testData).want(t, 201)
		if got := e.channelSize(t, "up"); got != int64(len(testData)) {
			t.Errorf("channel size = %d, want %d", got, len(testData))
		}
		if r := e.get(t, "/get/up/linux-64/"+testFile, "").want(t, 200); !bytes.Equal(r.body, testData) {
			t.Errorf("served file differs from the upload")
		}
		e.get(t, "/get/up/noarch/"+testFile, "").want(t, 404)
		rec := e.repodata(t, "up", "linux-64", "")[testFile]
		if rec == nil || rec["sha256"] != sha256Hex(testData) || rec["md5"] != md5Hex(testData) || rec["size"] != float64(len(testData)) ||
			rec["name"] != "test-package" || rec["version"] != "0.1" || rec["subdir"] != "linux-64" {
			t.Errorf("repodata record = %v", rec)
		}
		for _, p := range []string{"linux-64/repodata.json", "linux-64/repodata.json.zst", "linux-64/repodata.json.bz2",
			"linux-64/current_repodata.json", "linux-64/repodata_shards.msgpack.zst", "linux-64/index.html",
			"noarch/repodata.json", "channeldata.json", "index.html"} {
			e.get(t, "/get/up/"+p, "").want(t, 200)
		}
		checkCompressed(t, e, "up", "linux-64", e.get(t, "/get/up/linux-64/repodata.json", "").body)
		if r := e.get(t, "/get/up/linux-64/current_repodata.json", "").want(t, 200); !strings.Contains(string(r.body), testFile) {
			t.Errorf("current_repodata.json lacks %s", testFile)
		}
		var cd struct {
			Packages map[string]map[string]any `json:"packages"`
			Subdirs  []string                  `json:"subdirs"`
		}
		// Polls: channeldata.json may lag one write behind (indexer race, see report).
		channeldata, _ := e.indexes(t, "up")
		if err := json.Unmarshal([]byte(channeldata), &cd); err != nil {
			t.Fatal(err)
		}
		if cd.Packages["test-package"] == nil || !slices.Contains(cd.Subdirs, "linux-64") || !slices.Contains(cd.Subdirs, "noarch") {
			t.Errorf("channeldata = %+v", cd)
		}
		p := e.get(t, "/api/channels/up/packages/test-package", "").want(t, 200).obj(t)
		if p["current_version"] != "0.1" || fmt.Sprint(p["platforms"]) != "[linux-64]" {
			t.Errorf("package = %v", p)
		}
		// Several files in one request, .conda included.
		a, b := pkgSpec("multi-a", "1.0", "noarch"), pkgSpec("multi-b", "2.0", "linux-64")
		e.uploadFiles(t, admin, "up", "", map[string][]byte{
			condatest.Filename(a, ".conda"):   condatest.Conda(t, a),
			condatest.Filename(b, ".tar.bz2"): condatest.TarBz2(t, b),
		}, false).want(t, 201)
		if _, ok := e.repodata(t, "up", "noarch", "")[condatest.Filename(a, ".conda")]; !ok {
			t.Errorf("noarch repodata lacks the .conda upload")
		}
		if _, ok := e.repodata(t, "up", "linux-64", "")[condatest.Filename(b, ".tar.bz2")]; !ok {
			t.Errorf("linux-64 repodata lacks multi-b")
		}
	})

	// 53, 54.
	t.Run("endpoint and index name mismatches", func(t *testing.T) {
		e.newChannel(t, "mismatch", false, admin)
		e.do(t, "POST", "/api/channels/mismatch/packages", admin, map[string]any{"name": "my-package"}, nil).want(t, 201)
		before := e.snapshot(t, "mismatch", "linux-64")
		e.uploadFiles(t, admin, "mismatch", "my-package", map[string][]byte{testFile: testData}, false).
			wantErr(t, 400, "package endpoint", "does not match", "test-package", "my-package")
		e.unchanged(t, "mismatch", before)
		renamed := "my-package-0.1-h0_0.tar.bz2" // index.json says test-package
		for _, tc := range []struct {
			route string
			do    func() *res
		}{
			{"files", func() *res { return e.upload(t, admin, "mismatch", renamed, testData) }},
			{"package files", func() *res {
				return e.uploadFiles(t, admin, "mismatch", "my-package", map[string][]byte{renamed: testData}, false)
			}},
			{"upload", func() *res { return e.uploadRaw(t, admin, "mismatch", renamed, testData, sha256Hex(testData), false) }},
		} {
			t.Run(tc.route, func(t *testing.T) {
				tc.do().wantErr(t, 400, "info file", "do not match", "my-package", "package file name and info files do not match")
				e.unchanged(t, "mismatch", before)
			})
		}
		e.uploadFiles(t, admin, "mismatch", "nope", map[string][]byte{testFile: testData}, false).wantErr(t, 404, "Package mismatch/nope not found")
	})

	// 55, 57 (duplicates and force on both routes).
	t.Run("duplicates and force", func(t *testing.T) {
		e.newChannel(t, "dup", false, admin)
		setRoles(t, "dup")
		e.upload(t, admin, "dup", testFile, testData).want(t, 201)
		other := test
		other.Files = map[string]string{"share/changed": "different content\n"}
		otherData := condatest.TarBz2(t, other)
		before := e.snapshot(t, "dup")
		e.upload(t, admin, "dup", testFile, otherData).wantErr(t, 409, "Duplicate")
		e.uploadRaw(t, admin, "dup", testFile, otherData, sha256Hex(otherData), false).wantErr(t, 409, "Duplicate")
		// Overwriting needs a channel (or package) owner.
		e.uploadFiles(t, cmaint, "dup", "", map[string][]byte{testFile: otherData}, true).wantErr(t, 403, "No permission")
		e.unchanged(t, "dup", before)
		if r := e.get(t, "/get/dup/linux-64/"+testFile, "").want(t, 200); !bytes.Equal(r.body, testData) {
			t.Errorf("stored bytes changed by a refused duplicate")
		}

		check := func(data []byte) {
			t.Helper()
			rec := e.repodata(t, "dup", "linux-64", "")[testFile]
			if rec["sha256"] != sha256Hex(data) || rec["md5"] != md5Hex(data) || rec["size"] != float64(len(data)) {
				t.Errorf("repodata record = %v", rec)
			}
			if r := e.get(t, "/get/dup/linux-64/"+testFile, "").want(t, 200); !bytes.Equal(r.body, data) {
				t.Errorf("served bytes are not the forced upload")
			}
			if got := e.channelSize(t, "dup"); got != int64(len(data)) {
				t.Errorf("channel size = %d, want %d", got, len(data))
			}
			if l := e.get(t, "/api/channels/dup/packages/test-package/versions", "").want(t, 200).list(t); len(l) != 1 {
				t.Errorf("versions after force = %d, want 1", len(l))
			}
		}
		e.uploadFiles(t, cowner, "dup", "", map[string][]byte{testFile: otherData}, true).want(t, 201)
		check(otherData)
		e.uploadRaw(t, admin, "dup", testFile, testData, sha256Hex(testData), true).want(t, 201)
		check(testData)
		// force as a query parameter on files/ too.
		body, ctype := multipartBody(t, map[string][]byte{testFile: otherData}, "")
		e.do(t, "POST", "/api/channels/dup/files/?force=true", admin, body, hdr{"Content-Type": ctype}).want(t, 201)
		check(otherData)
	})

	// 56 (and the /upload/ route is quota-checked too: a fixed Quetz defect, §12).
	t.Run("quota", func(t *testing.T) {
		e.newChannel(t, "quota", false, admin)
		e.do(t, "PATCH", "/api/channels/quota", admin, map[string]any{"size_limit": 0}, nil).want(t, 200)
		before := e.snapshot(t, "quota", "linux-64")
		e.upload(t, admin, "quota", testFile, testData).wantErr(t, 422, "quota")
		e.uploadRaw(t, admin, "quota", testFile, testData, sha256Hex(testData), false).wantErr(t, 422, "quota")
		e.unchanged(t, "quota", before)
		e.get(t, "/get/quota/linux-64/"+testFile, "").want(t, 404)

		// Room for one package, not two.
		e.do(t, "PATCH", "/api/channels/quota", admin, map[string]any{"size_limit": len(testData) + 10}, nil).want(t, 200)
		e.upload(t, admin, "quota", testFile, testData).want(t, 201)
		two := pkgSpec("test-package", "0.2", "linux-64")
		twoFile, twoData := condatest.Filename(two, ".tar.bz2"), condatest.TarBz2(t, two)
		before = e.snapshot(t, "quota", "linux-64")
		e.upload(t, admin, "quota", twoFile, twoData).wantErr(t, 422, "quota", "quota is above quota of")
		e.uploadRaw(t, admin, "quota", twoFile, twoData, sha256Hex(twoData), false).wantErr(t, 422, "quota")
		// Both files in one request: the total counts.
		e.do(t, "PATCH", "/api/channels/quota", admin, map[string]any{"size_limit": len(testData) + len(twoData) - 1}, nil).want(t, 200)
		three := pkgSpec("third", "1.0", "noarch")
		e.uploadFiles(t, admin, "quota", "", map[string][]byte{twoFile: twoData, condatest.Filename(three, ".conda"): condatest.Conda(t, three)}, false).wantErr(t, 422, "quota")
		e.unchanged(t, "quota", before)
	})

	// 57: the raw upload route.
	t.Run("upload route", func(t *testing.T) {
		e.newChannel(t, "raw", false, admin)
		c := pkgSpec("raw-pkg", "1.0", "osx-arm64")
		cFile, cData := condatest.Filename(c, ".conda"), condatest.Conda(t, c)
		before := e.snapshot(t, "raw", "osx-arm64")
		e.uploadRaw(t, admin, "raw", cFile, cData, sha256Hex([]byte("other")), false).wantErr(t, 406, "Wrong SHA256 checksum")
		e.uploadRaw(t, admin, "raw", cFile, cData, "", false).want(t, 422)
		e.uploadRaw(t, admin, "raw", cFile, cData, "xyz", false).want(t, 422)
		e.uploadRaw(t, admin, "raw", cFile, cData[:len(cData)/2], sha256Hex(cData), false).wantErr(t, 406, "Wrong SHA256 checksum")
		e.unchanged(t, "raw", before)
		e.uploadRaw(t, admin, "raw", cFile, cData, sha256Hex(cData), false).want(t, 201)
		if r := e.get(t, "/get/raw/osx-arm64/"+cFile, "").want(t, 200); !bytes.Equal(r.body, cData) {
			t.Errorf("served bytes differ")
		}
		// Fixed Quetz defect (§12): this route accounts the channel size too.
		if got := e.channelSize(t, "raw"); got != int64(len(cData)) {
			t.Errorf("channel size = %d, want %d", got, len(cData))
		}
		e.uploadRaw(t, admin, "raw", cFile, cData, sha256Hex(cData), false).wantErr(t, 409, "Duplicate")
	})

	// 58.
	t.Run("package names", func(t *testing.T) {
		e.newChannel(t, "names", false, admin)
		for _, tc := range []struct {
			name string
			want int
		}{
			{"interesting-package", 201}, {"valid.package.name", 201}, {"valid-package-name", 201},
			{"valid_package_name", 201}, {"validpackage1234", 201}, {strings.Repeat("a", 800), 201},
			{"InvalidPackage", 422}, {"invalid package", 422}, {"invalid%package", 422},
			{"**invalidpackage**", 422}, {"błędnypakiet", 422}, {"", 422},
		} {
			r := e.do(t, "POST", "/api/channels/names/packages", admin, map[string]any{"name": tc.name}, nil).want(t, tc.want)
			if tc.want == 201 {
				e.get(t, "/api/channels/names/packages/"+url.PathEscape(tc.name), "").want(t, 200)
			} else {
				r.wantErr(t, 422, "String should match pattern")
			}
		}
		e.do(t, "POST", "/api/channels/names/packages", admin, map[string]any{"name": "interesting-package"}, nil).wantErr(t, 409, "Package names/interesting-package exists")
		e.do(t, "POST", "/api/channels/names/packages", admin, map[string]any{}, nil).want(t, 422)
		// An upload whose package name breaks the rule is refused; nothing is stored.
		before := e.snapshot(t, "names")
		bad := condatest.Spec{Name: "TestPackage", Version: "1.0", Build: "0"}
		e.upload(t, admin, "names", condatest.Filename(bad, ".tar.bz2"), condatest.TarBz2(t, bad)).wantErr(t, 422, "Validation Error for package")
		e.unchanged(t, "names", before)
	})

	// 59.
	t.Run("upload permissions", func(t *testing.T) {
		e.newChannel(t, "perm", false, admin)
		setRoles(t, "perm")
		for i, tc := range []struct {
			who, key string
			want     int
		}{
			{"S maintainer", smaint, 201}, {"C owner", cowner, 201}, {"C maintainer", cmaint, 201},
			{"C member", cmember, 403}, {"no role", none, 403}, {"anonymous", "", 401},
		} {
			t.Run(tc.who, func(t *testing.T) {
				before := e.snapshot(t, "perm", "linux-64")
				pname := fmt.Sprintf("perm-pkg-%d", i)
				r := e.do(t, "POST", "/api/channels/perm/packages", tc.key, map[string]any{"name": pname}, nil).want(t, tc.want)
				s1 := pkgSpec(fmt.Sprintf("perm-files-%d", i), "1.0", "linux-64")
				r1 := e.upload(t, tc.key, "perm", condatest.Filename(s1, ".tar.bz2"), condatest.TarBz2(t, s1)).want(t, tc.want)
				s2 := pkgSpec(fmt.Sprintf("perm-raw-%d", i), "1.0", "linux-64")
				d2 := condatest.Conda(t, s2)
				r2 := e.uploadRaw(t, tc.key, "perm", condatest.Filename(s2, ".conda"), d2, sha256Hex(d2), false).want(t, tc.want)
				if tc.want != 201 {
					for _, rr := range []*res{r, r1, r2} {
						rr.wantErr(t, tc.want, map[int]string{401: "Not logged in", 403: "No permission"}[tc.want])
					}
					e.unchanged(t, "perm", before)
					return
				}
				uploader := e.get(t, "/api/channels/perm/packages/"+s1.Name+"/versions", "").want(t, 200).list(t)[0]["uploader"]
				if u, _ := uploader.(map[string]any); u == nil || u["name"] == nil {
					t.Errorf("uploader = %v", uploader)
				}
			})
		}
		// A package owner or maintainer without a channel role uploads
		// new files of that package; a package member does not.
		e.addPackageMember(t, "perm", "perm-files-1", "up-none", "maintainer")
		s := pkgSpec("perm-files-1", "2.0", "linux-64")
		e.upload(t, none, "perm", condatest.Filename(s, ".tar.bz2"), condatest.TarBz2(t, s)).want(t, 201)
		e.addPackageMember(t, "perm", "perm-files-1", "up-cmember", "member")
		s = pkgSpec("perm-files-1", "3.0", "linux-64")
		e.upload(t, cmember, "perm", condatest.Filename(s, ".tar.bz2"), condatest.TarBz2(t, s)).wantErr(t, 403, "No permission")
	})
	t.Run("scoped key uploads to a private channel", func(t *testing.T) {
		okey := e.newUser(t, "scope-owner", "")
		e.newChannel(t, "scoped", true, admin)
		e.addMember(t, "scoped", "scope-owner", "owner")
		var k struct {
			Key string `json:"key"`
		}
		e.do(t, "POST", "/api/api-keys", okey, map[string]any{"description": "ci", "roles": []map[string]any{{"channel": "scoped", "role": "maintainer"}}}, nil).want(t, 201).decode(t, &k)
		e.do(t, "POST", "/api/channels/scoped/packages", k.Key, map[string]any{"name": "by-key"}, nil).want(t, 201)
		s := pkgSpec("by-key", "1.0", "noarch")
		e.upload(t, k.Key, "scoped", condatest.Filename(s, ".tar.bz2"), condatest.TarBz2(t, s)).want(t, 201)
		s2 := pkgSpec("by-key-raw", "1.0", "noarch")
		d2 := condatest.TarBz2(t, s2)
		e.uploadRaw(t, k.Key, "scoped", condatest.Filename(s2, ".tar.bz2"), d2, sha256Hex(d2), false).want(t, 201)
		v := e.get(t, "/api/channels/scoped/packages/by-key/versions", k.Key).want(t, 200).list(t)
		if len(v) != 1 || fmt.Sprint(v[0]["uploader"].(map[string]any)["name"]) != "scope-owner" {
			t.Errorf("versions = %v, want uploader scope-owner (the key's owner)", v)
		}
		for _, p := range []string{"by-key", "by-key-raw"} {
			ms := e.get(t, "/api/channels/scoped/packages/"+p+"/members", admin).want(t, 200).list(t)
			if len(ms) != 1 || ms[0]["role"] != "owner" || ms[0]["user"].(map[string]any)["username"] != "scope-owner" {
				t.Errorf("%s members = %v, want the key's owner as owner", p, ms)
			}
		}
	})

	// 60.
	t.Run("delete package", func(t *testing.T) {
		e.newChannel(t, "delpkg", false, admin)
		keep := pkgSpec("keep-me", "1.0", "linux-64")
		keepFile, keepData := condatest.Filename(keep, ".tar.bz2"), condatest.TarBz2(t, keep)
		e.upload(t, admin, "delpkg", keepFile, keepData).want(t, 201)
		for _, tc := range []struct {
			who, user, pkgRole string
			key                string
			want               int
		}{
			{"P member", "up-cmember", "member", cmember, 403},
			{"no role", "", "", none, 403},
			{"anonymous", "", "", "", 401},
			{"P maintainer", "up-cmaint", "maintainer", cmaint, 200},
			{"P owner", "up-cowner", "owner", cowner, 200},
		} {
			t.Run(tc.who, func(t *testing.T) {
				e.upload(t, admin, "delpkg", testFile, testData).want(t, 201)
				if tc.pkgRole != "" {
					e.addPackageMember(t, "delpkg", "test-package", tc.user, tc.pkgRole)
				}
				before := e.snapshot(t, "delpkg", "linux-64")
				e.do(t, "DELETE", "/api/channels/delpkg/packages/test-package", tc.key, nil, nil).want(t, tc.want)
				if tc.want != 200 {
					e.unchanged(t, "delpkg", before)
					e.do(t, "DELETE", "/api/channels/delpkg/packages/test-package", admin, nil, nil).want(t, 200)
				}
				e.get(t, "/api/channels/delpkg/packages/test-package", "").wantErr(t, 404, "Package delpkg/test-package not found")
				e.get(t, "/get/delpkg/linux-64/"+testFile, "").want(t, 404)
				rd := e.repodata(t, "delpkg", "linux-64", "")
				if _, ok := rd[testFile]; ok || rd[keepFile] == nil {
					t.Errorf("repodata after delete: %v", rd)
				}
				if got := e.channelSize(t, "delpkg"); got != int64(len(keepData)) {
					t.Errorf("channel size = %d, want %d", got, len(keepData))
				}
				if r := e.get(t, "/get/delpkg/linux-64/"+keepFile, "").want(t, 200); !bytes.Equal(r.body, keepData) {
					t.Errorf("other package's file changed")
				}
			})
		}
		e.do(t, "DELETE", "/api/channels/delpkg/packages/nope", admin, nil, nil).wantErr(t, 404, "Package delpkg/nope not found")
	})

	// 61, 62, 63.
	t.Run("versions", func(t *testing.T) {
		e.newChannel(t, "vers", false, admin)
		setRoles(t, "vers")
		two := pkgSpec("test-package", "0.2", "linux-64")
		twoFile, twoData := condatest.Filename(two, ".tar.bz2"), condatest.TarBz2(t, two)
		e.upload(t, admin, "vers", testFile, testData).want(t, 201)
		e.upload(t, admin, "vers", twoFile, twoData).want(t, 201)
		if v := e.get(t, "/api/channels/vers/packages/test-package", "").want(t, 200).obj(t)["current_version"]; v != "0.2" {
			t.Errorf("current_version = %v", v)
		}

		// 62.
		v := e.get(t, "/api/channels/vers/packages/test-package/versions/linux-64/"+testFile, "").want(t, 200).obj(t)
		if v["filename"] != testFile || v["platform"] != "linux-64" || v["download_count"] != 0.0 || v["version"] != "0.1" {
			t.Errorf("version = %v", v)
		}
		e.get(t, "/api/channels/vers/packages/test-package/versions/noarch/"+testFile, "").want(t, 404)
		e.get(t, "/api/channels/vers/packages/test-package/versions/linux-64/nope-1-0.tar.bz2", "").want(t, 404)

		// 63.
		past := time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04:05")
		future := time.Now().UTC().Add(time.Hour).Format("2006-01-02T15:04:05")
		if l := e.get(t, "/api/channels/vers/packages/test-package/versions?time_created__ge="+future, "").want(t, 200).list(t); len(l) != 0 {
			t.Errorf("time_created__ge=future: %d versions", len(l))
		}
		l := e.get(t, "/api/channels/vers/packages/test-package/versions?time_created__ge="+past, "").want(t, 200).list(t)
		if len(l) != 2 {
			t.Fatalf("time_created__ge=past: %d versions", len(l))
		}
		if l2 := e.get(t, "/api/channels/vers/packages/test-package/versions?time_created__le="+past, "").want(t, 200).list(t); len(l2) != 0 {
			t.Errorf("time_created__le=past: %d versions", len(l2))
		}
		e.get(t, "/api/channels/vers/packages/test-package/versions?time_created__ge=yesterday", "").want(t, 422)
		up, _ := l[0]["uploader"].(map[string]any)
		info, _ := l[0]["info"].(map[string]any)
		if _, ok := up["avatar_url"]; !ok || up["name"] == nil || info == nil || l[0]["download_count"] != 0.0 || l[0]["version"] != "0.2" {
			t.Errorf("version JSON = %v", l[0])
		}
		if _, err := time.Parse("2006-01-02T15:04:05", fmt.Sprint(l[0]["time_created"])); err != nil {
			t.Errorf("time_created %v is not naive ISO: %v", l[0]["time_created"], err)
		}

		// 61.
		for _, tc := range []struct {
			who, key string
			want     int
		}{
			{"C member", cmember, 403}, {"no role", none, 403}, {"anonymous", "", 401}, {"C maintainer", cmaint, 200},
		} {
			t.Run("delete as "+tc.who, func(t *testing.T) {
				before := e.snapshot(t, "vers", "linux-64")
				e.do(t, "DELETE", "/api/channels/vers/packages/test-package/versions/linux-64/"+twoFile, tc.key, nil, nil).want(t, tc.want)
				if tc.want != 200 {
					e.unchanged(t, "vers", before)
					return
				}
				e.get(t, "/get/vers/linux-64/"+twoFile, "").want(t, 404)
				rd := e.repodata(t, "vers", "linux-64", "")
				if _, ok := rd[twoFile]; ok || rd[testFile] == nil {
					t.Errorf("repodata after delete: %v", rd)
				}
				if got := e.channelSize(t, "vers"); got != int64(len(testData)) {
					t.Errorf("size = %d, want %d", got, len(testData))
				}
				if v := e.get(t, "/api/channels/vers/packages/test-package", "").want(t, 200).obj(t)["current_version"]; v != "0.1" {
					t.Errorf("current_version after delete = %v, want 0.1", v)
				}
			})
		}
		e.do(t, "DELETE", "/api/channels/vers/packages/test-package/versions/linux-64/"+testFile, smaint, nil, nil).want(t, 200)
		if got := e.channelSize(t, "vers"); got != 0 {
			t.Errorf("size = %d, want 0", got)
		}
		if rd := e.repodata(t, "vers", "linux-64", ""); len(rd) != 0 {
			t.Errorf("repodata = %v, want empty", rd)
		}
		e.do(t, "DELETE", "/api/channels/vers/packages/test-package/versions/linux-64/"+testFile, admin, nil, nil).want(t, 404)

		// 62: private channels.
		okey := e.newUser(t, "pv-owner", "member")
		e.newChannel(t, "privvers", true, okey)
		e.upload(t, okey, "privvers", testFile, testData).want(t, 201)
		e.addPackageMember(t, "privvers", "test-package", "up-cmaint", "member")
		e.addMember(t, "privvers", "up-cowner", "member")
		path := "/api/channels/privvers/packages/test-package/versions/linux-64/" + testFile
		for _, tc := range []struct {
			who, key string
			want     int
		}{
			{"C owner", okey, 200}, {"C member", cowner, 200}, {"P member", cmaint, 200}, {"S maintainer", smaint, 200},
			{"S member", cmember, 403}, {"no role", none, 403}, {"anonymous", "", 401},
		} {
			e.get(t, path, tc.key).want(t, tc.want)
		}
	})
}
