package api_test

import (
	"archive/tar"
	"bytes"
	"encoding/hex"
	"math/rand/v2"
	"net/http"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestRESTBadInput sends refused requests and checks that nothing stored
// changed: the package list, every subdir's repodata.json, channeldata.json,
// the channel's accounted size and the node's blobs.
func TestRESTBadInput(t *testing.T) { inHTTPModes(t, testRESTBadInput) }

func testRESTBadInput(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	memberKey := e.newUser(t, "bad-member", "member")
	e.newChannel(t, "bad", false, admin)
	e.addMember(t, "bad", "bad-member", "member")

	good := pkgSpec("good", "1.0", "linux-64")
	goodFile, goodData := condatest.Filename(good, ".tar.bz2"), condatest.TarBz2(t, good)
	e.upload(t, admin, "bad", goodFile, goodData).want(t, 201)
	goodConda := pkgSpec("good-conda", "1.0", "noarch")
	goodCondaFile, goodCondaData := condatest.Filename(goodConda, ".conda"), condatest.Conda(t, goodConda)
	e.upload(t, admin, "bad", goodCondaFile, goodCondaData).want(t, 201)

	// Keys that identify nobody.
	var expired, deleted struct {
		Key string `json:"key"`
	}
	e.do(t, "POST", "/api/api-keys", admin, map[string]any{"description": "old", "expire_at": "2000-01-01"}, nil).want(t, 201).decode(t, &expired)
	e.do(t, "POST", "/api/api-keys", admin, map[string]any{"description": "gone"}, nil).want(t, 201).decode(t, &deleted)
	e.do(t, "DELETE", "/api/api-keys/"+deleted.Key, admin, nil, nil).want(t, 200)

	newPkg := pkgSpec("newpkg", "1.0", "linux-64")
	newFile, newData := condatest.Filename(newPkg, ".tar.bz2"), condatest.TarBz2(t, newPkg)
	newCondaFile, newCondaData := condatest.Filename(newPkg, ".conda"), condatest.Conda(t, newPkg)
	corrupt := func(b []byte) []byte {
		c := bytes.Clone(b)
		for i := len(c) / 3; i < len(c)/3+64 && i < len(c); i++ {
			c[i] ^= 0x5a
		}
		return c
	}
	mismatch := func(m map[string]any) []byte {
		return condatest.TarBz2(t, condatest.WithIndexOverride(newPkg, m))
	}
	escapingTar := condatest.TarBz2(t, condatest.WithEscapingMember(newPkg))
	escapingConda := condatest.Conda(t, condatest.WithEscapingMember(newPkg))
	symlinkOut := condatest.TarBz2(t, condatest.WithMember(newPkg, condatest.Member{Name: "info/link", Type: tar.TypeSymlink, Linkname: "../../../etc/passwd"}))
	absolute := condatest.TarBz2(t, condatest.WithMember(newPkg, condatest.Member{Name: "/etc/evil", Content: "x"}))
	noIndex := newPkg
	noIndex.OmitIndex = true
	otherGood := good
	otherGood.Files = map[string]string{"share/other": "other\n"}
	badSHA := sha256Hex([]byte("not the body"))

	files := func(key, name string, data []byte) func() *res {
		return func() *res { return e.upload(t, key, "bad", name, data) }
	}
	raw := func(key, name string, data []byte) func() *res {
		return func() *res { return e.uploadRaw(t, key, "bad", name, data, sha256Hex(data), false) }
	}
	rawPath := func(escapedName string, data []byte) func() *res {
		return func() *res {
			return e.do(t, "POST", "/api/channels/bad/upload/"+escapedName+"?sha256="+sha256Hex(data), admin, data, nil)
		}
	}
	json := func(method, path, body string) func() *res {
		return func() *res { return e.do(t, method, path, admin, body, nil) }
	}

	for _, tc := range []struct {
		name   string
		do     func() *res
		status int
		detail []string
	}{
		// Archives that cannot be read.
		{"truncated tar.bz2 via files", files(admin, newFile, newData[:len(newData)/2]), 400, []string{"bad archive"}},
		{"truncated tar.bz2 via upload", raw(admin, newFile, newData[:len(newData)/2]), 400, []string{"bad archive"}},
		{"truncated conda via files", files(admin, newCondaFile, newCondaData[:len(newCondaData)/2]), 400, nil},
		{"truncated conda via upload", raw(admin, newCondaFile, newCondaData[:len(newCondaData)-30]), 400, nil},
		{"corrupt tar.bz2", files(admin, newFile, corrupt(newData)), 400, []string{"bad archive"}},
		{"corrupt conda", files(admin, newCondaFile, corrupt(newCondaData)), 400, nil},
		{"garbage conda", raw(admin, newCondaFile, []byte("PK\x03\x04 this is not a zip")), 400, nil},
		{"empty body", raw(admin, newFile, nil), 400, []string{"not a bzip2 file"}},
		{"conda bytes named tar.bz2", files(admin, newFile, newCondaData), 400, []string{"not a bzip2 file"}},
		{"tar.bz2 bytes named conda", files(admin, newCondaFile, newData), 400, nil},
		{"missing index.json", files(admin, newFile, condatest.TarBz2(t, noIndex)), 400, []string{"index.json"}},
		{"forced corrupt overwrite", func() *res {
			return e.uploadFiles(t, admin, "bad", "", map[string][]byte{goodFile: corrupt(goodData)}, true)
		}, 400, nil},
		{"second file of a request is bad", func() *res {
			return e.uploadFiles(t, admin, "bad", "", map[string][]byte{newFile: newData, "zzz-1.0-0.tar.bz2": []byte("dfdf")}, false)
		}, 400, []string{"not a bzip2 file"}},
		{"duplicate after a new file in one request", func() *res {
			return e.uploadFiles(t, admin, "bad", "", map[string][]byte{newFile: newData, goodFile: condatest.TarBz2(t, otherGood)}, false)
		}, 409, []string{"Duplicate"}},

		// Checksums.
		{"wrong sha256", func() *res { return e.uploadRaw(t, admin, "bad", newFile, newData, badSHA, false) }, 406, []string{"Wrong SHA256 checksum"}},
		{"wrong sha256 with force", func() *res { return e.uploadRaw(t, admin, "bad", goodFile, newData, badSHA, true) }, 406, []string{"Wrong SHA256 checksum"}},
		{"sha256 missing", func() *res {
			return e.do(t, "POST", "/api/channels/bad/upload/"+newFile, admin, newData, nil)
		}, 422, []string{"Field required"}},

		// Names that are not plain file names.
		{"dot-dot in name", raw(admin, "evil..pkg-1.0-0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"escaped slash", rawPath("linux-64%2Fnewpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"escaped dot-dot slash", rawPath("..%2F..%2Fnewpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"escaped backslash", rawPath("..%5Cnewpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"fully escaped dot-dot", rawPath("%2E%2E%2Fnewpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"multipart dot-dot slash", files(admin, "../newpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"multipart slash", files(admin, "linux-64/newpkg-1.0-h0_0.tar.bz2", newData), 400, []string{"wrong format"}},
		{"multipart no parts", func() *res { return e.uploadFiles(t, admin, "bad", "", nil, false) }, 422, nil},
		{"files not multipart", json("POST", "/api/channels/bad/files/", `{"files": []}`), 422, nil},
		{"too few dashes", files(admin, "newpkg-1.0.tar.bz2", newData), 400, []string{"wrong format"}},

		// Archive members escaping the root.
		{"escaping member tar.bz2", files(admin, newFile, escapingTar), 400, []string{"unsafe archive"}},
		{"escaping member conda", files(admin, newCondaFile, escapingConda), 400, []string{"unsafe archive"}},
		{"escaping member via upload", raw(admin, newFile, escapingTar), 400, []string{"unsafe archive"}},
		{"symlink out of the root", files(admin, newFile, symlinkOut), 400, []string{"unsafe archive"}},
		{"absolute member", files(admin, newFile, absolute), 400, []string{"unsafe archive"}},

		// index.json disagreeing with the file name.
		{"index name", files(admin, newFile, mismatch(map[string]any{"name": "other"})), 400, []string{"package file name and info files do not match"}},
		{"index version", files(admin, newFile, mismatch(map[string]any{"version": "2.0"})), 400, []string{"package file name and info files do not match"}},
		{"index build", raw(admin, newFile, mismatch(map[string]any{"build": "other_0"})), 400, []string{"package file name and info files do not match"}},
		{"index subdir", files(admin, newFile, mismatch(map[string]any{"subdir": "../x"})), 400, nil},
		{"index name over an existing file with force", func() *res {
			return e.uploadFiles(t, admin, "bad", "", map[string][]byte{goodFile: condatest.TarBz2(t, condatest.WithIndexOverride(good, map[string]any{"name": "other"}))}, true)
		}, 400, []string{"package file name and info files do not match"}},

		// Invalid JSON bodies.
		{"create channel: not JSON", json("POST", "/api/channels", `{"name": `), 422, nil},
		{"create channel: array", json("POST", "/api/channels", `["bad2"]`), 422, nil},
		{"create channel: wrong type", json("POST", "/api/channels", `{"name": "bad3", "private": "very"}`), 422, []string{"valid boolean"}},
		{"create channel: no name", json("POST", "/api/channels", `{"private": false}`), 422, []string{"Field required"}},
		{"patch channel: not JSON", json("PATCH", "/api/channels/bad", `private=true`), 422, nil},
		{"patch channel: wrong type", json("PATCH", "/api/channels/bad", `{"ttl": "long"}`), 422, []string{"valid integer"}},
		{"create package: null", json("POST", "/api/channels/bad/packages", `null`), 422, nil},
		{"create package: wrong type", json("POST", "/api/channels/bad/packages", `{"name": 7}`), 422, nil},
		{"add member: not JSON", json("POST", "/api/channels/bad/members", `{`), 422, nil},
		{"add member: bad role", json("POST", "/api/channels/bad/members", `{"username": "bad-member", "role": "emperor"}`), 422, nil},
		{"api key: not JSON", json("POST", "/api/api-keys", `description`), 422, nil},
		{"api key: bad date", json("POST", "/api/api-keys", `{"description": "d", "expire_at": "soon"}`), 422, nil},
		{"user role: not JSON", json("PUT", "/api/users/bad-member/role", `{]`), 422, nil},

		// Unknown channels.
		{"files to unknown channel", func() *res { return e.upload(t, admin, "x", newFile, newData) }, 404, []string{"Channel x not found"}},
		{"upload to unknown channel", func() *res { return e.uploadRaw(t, admin, "x", newFile, newData, sha256Hex(newData), false) }, 404, []string{"Channel x not found"}},
		{"package to unknown channel", json("POST", "/api/channels/x/packages", `{"name": "p"}`), 404, []string{"Channel x not found"}},
		{"member of unknown channel", json("POST", "/api/channels/x/members", `{"username": "bad-member", "role": "member"}`), 404, []string{"Channel x not found"}},
		{"patch unknown channel", json("PATCH", "/api/channels/x", `{"ttl": 5}`), 404, []string{"Channel x not found"}},
		{"delete unknown channel", json("DELETE", "/api/channels/x", ``), 404, []string{"Channel x not found"}},
		{"get from unknown channel", func() *res { return e.get(t, "/get/x/noarch/repodata.json", "") }, 404, []string{"Channel x not found"}},

		// Wrong roles.
		{"upload as channel member", files(memberKey, newFile, newData), 403, []string{"No permission"}},
		{"raw upload as channel member", raw(memberKey, newFile, newData), 403, []string{"No permission"}},
		{"create package as channel member", func() *res {
			return e.do(t, "POST", "/api/channels/bad/packages", memberKey, map[string]any{"name": "p"}, nil)
		}, 403, []string{"No permission"}},
		{"delete package as channel member", func() *res {
			return e.do(t, "DELETE", "/api/channels/bad/packages/good", memberKey, nil, nil)
		}, 403, []string{"No permission"}},
		{"delete version as channel member", func() *res {
			return e.do(t, "DELETE", "/api/channels/bad/packages/good/versions/linux-64/"+goodFile, memberKey, nil, nil)
		}, 403, []string{"No permission"}},
		{"patch as channel member", func() *res {
			return e.do(t, "PATCH", "/api/channels/bad", memberKey, map[string]any{"private": true}, nil)
		}, 403, []string{"No permission"}},
		{"size limit as channel member", func() *res {
			return e.do(t, "PATCH", "/api/channels/bad", memberKey, map[string]any{"size_limit": 1}, nil)
		}, 403, nil},
		{"add member as channel member", func() *res {
			return e.do(t, "POST", "/api/channels/bad/members", memberKey, map[string]any{"username": "bad-member", "role": "owner"}, nil)
		}, 403, []string{"No permission"}},
		{"delete channel as channel member", func() *res { return e.do(t, "DELETE", "/api/channels/bad", memberKey, nil, nil) }, 403, []string{"No permission"}},

		// Expired and deleted keys are anonymous.
		{"upload with expired key", files(expired.Key, newFile, newData), 401, []string{"Not logged in"}},
		{"raw upload with expired key", raw(expired.Key, newFile, newData), 401, []string{"Not logged in"}},
		{"upload with deleted key", files(deleted.Key, newFile, newData), 401, []string{"Not logged in"}},
		{"delete package with deleted key", func() *res {
			return e.do(t, "DELETE", "/api/channels/bad/packages/good", deleted.Key, nil, nil)
		}, 401, []string{"Not logged in"}},
		{"delete channel with expired key", func() *res { return e.do(t, "DELETE", "/api/channels/bad", expired.Key, nil, nil) }, 401, []string{"Not logged in"}},
		{"upload with /t/ expired key", func() *res {
			body, ctype := multipartBody(t, map[string][]byte{newFile: newData}, "")
			return e.do(t, "POST", "/t/"+expired.Key+"/api/channels/bad/files/", "", body, hdr{"Content-Type": ctype})
		}, 401, []string{"Not logged in"}},
		{"upload with unknown key", files("no-such-key", newFile, newData), 401, []string{"Not logged in"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.snapshot(t, "bad", "linux-64", "noarch")
			tc.do().wantErr(t, tc.status, tc.detail...)
			e.unchanged(t, "bad", before)
			e.get(t, "/api/channels/bad3", admin).want(t, 404)
			if r := e.get(t, "/get/bad/linux-64/"+goodFile, ""); r.status != http.StatusOK || !bytes.Equal(r.body, goodData) {
				t.Errorf("the stored package changed: %v", r.status)
			}
		})
	}

	// Over the channel's size limit.
	t.Run("quota", func(t *testing.T) {
		e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "bad-quota", "private": false, "size_limit": len(goodData) + 100}, nil).want(t, 201)
		e.upload(t, admin, "bad-quota", goodFile, goodData).want(t, 201)
		before := e.snapshot(t, "bad-quota", "linux-64", "noarch")
		e.upload(t, admin, "bad-quota", newFile, newData).wantErr(t, 422, "quota")
		e.uploadRaw(t, admin, "bad-quota", newCondaFile, newCondaData, sha256Hex(newCondaData), false).wantErr(t, 422, "quota")
		// A forced overwrite with a bigger file is over quota too.
		bigger := good
		noise := rand.NewChaCha8([32]byte{1})
		big := make([]byte, 4000)
		_, _ = noise.Read(big)
		bigger.Files = map[string]string{"share/big": hex.EncodeToString(big)}
		e.uploadFiles(t, admin, "bad-quota", "", map[string][]byte{goodFile: condatest.TarBz2(t, bigger)}, true).wantErr(t, 422, "quota")
		e.unchanged(t, "bad-quota", before)
	})
}
