package api_test

import (
	"bytes"
	"github.com/condamesh/condamesh/node/nodetest"
	"mime/multipart"
	"net/http"
	"net/url"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

// multipartFields builds a files/ body whose parts come in the given
// order: a field named "files" is a file part (name, data), any other a
// form field (value in data).
func multipartFields(t testing.TB, parts ...[3]string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var err error
		if p[0] == "files" {
			var w interface{ Write([]byte) (int, error) }
			if w, err = mw.CreateFormFile("files", p[1]); err == nil {
				_, err = w.Write([]byte(p[2]))
			}
		} else {
			err = mw.WriteField(p[0], p[2])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// TestUploadForceRule: one rule decides who may overwrite a package file,
// whatever the route and wherever force is given (issue 9 point 5: the raw
// upload route let a channel maintainer overwrite what files/ refused, and
// a force field after the file parts skipped the check).
func TestUploadForceRule(t *testing.T) { inHTTPModes(t, testUploadForceRule) }

func testUploadForceRule(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	keys := map[string]string{"admin": admin}
	for _, u := range []string{"f-cowner", "f-cmaint", "f-powner"} {
		keys[u] = e.newUser(t, u, "")
	}
	spec := pkgSpec("forced", "1.0", "linux-64")
	file, orig := condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)
	other := spec
	other.Files = map[string]string{"share/other": "other bytes\n"}
	otherData := condatest.TarBz2(t, other)

	routes := []struct {
		name string
		do   func(t *testing.T, key, ch string) *res
	}{
		{"files form field first", func(t *testing.T, key, ch string) *res {
			body, ctype := multipartFields(t, [3]string{"force", "", "true"}, [3]string{"files", file, string(otherData)})
			return e.do(t, "POST", "/api/channels/"+ch+"/files/", key, body, hdr{"Content-Type": ctype})
		}},
		{"files form field after the file", func(t *testing.T, key, ch string) *res {
			body, ctype := multipartFields(t, [3]string{"files", file, string(otherData)}, [3]string{"force", "", "true"})
			return e.do(t, "POST", "/api/channels/"+ch+"/files/", key, body, hdr{"Content-Type": ctype})
		}},
		{"files query", func(t *testing.T, key, ch string) *res {
			body, ctype := multipartFields(t, [3]string{"files", file, string(otherData)})
			return e.do(t, "POST", "/api/channels/"+ch+"/files/?force=true", key, body, hdr{"Content-Type": ctype})
		}},
		{"package files", func(t *testing.T, key, ch string) *res {
			body, ctype := multipartFields(t, [3]string{"files", file, string(otherData)}, [3]string{"force", "", "true"})
			return e.do(t, "POST", "/api/channels/"+ch+"/packages/forced/files/", key, body, hdr{"Content-Type": ctype})
		}},
		{"upload route", func(t *testing.T, key, ch string) *res {
			return e.uploadRaw(t, key, ch, file, otherData, sha256Hex(otherData), true)
		}},
	}
	for i, rt := range routes {
		t.Run(rt.name, func(t *testing.T) {
			for j, who := range []struct {
				user string
				want int
			}{
				{"f-cmaint", http.StatusForbidden},
				{"f-powner", http.StatusForbidden}, // see below for the routes a package owner may use
				{"f-cowner", http.StatusCreated},
				{"admin", http.StatusCreated},
			} {
				ch := "force-" + string(rune('a'+i)) + string(rune('a'+j))
				e.newChannel(t, ch, false, admin)
				e.upload(t, admin, ch, file, orig).want(t, http.StatusCreated)
				e.addMember(t, ch, "f-cowner", "owner")
				e.addMember(t, ch, "f-cmaint", "maintainer")
				e.addPackageMember(t, ch, "forced", "f-powner", "owner")
				want := who.want
				// A package owner may overwrite through the files/
				// routes; the upload route needs a channel role first.
				if who.user == "f-powner" && rt.name != "upload route" {
					want = http.StatusCreated
				}
				rt.do(t, keys[who.user], ch).want(t, want)
				served := e.get(t, "/get/"+ch+"/linux-64/"+file, "").want(t, http.StatusOK).body
				if overwritten := bytes.Equal(served, otherData); overwritten != (want == http.StatusCreated) {
					t.Errorf("%s: overwritten = %v after %d", who.user, overwritten, want)
				}
			}
		})
	}
}

// TestUploadForceParsing: force is read like FastAPI reads a bool, in the
// form and in the query; anything else is a 422 naming where it was
// (issue 9 point 22: force=notabool in the form was a silent false).
func TestUploadForceParsing(t *testing.T) { inHTTPModes(t, testUploadForceParsing) }

func testUploadForceParsing(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "fp", false, admin)
	spec := pkgSpec("fp-pkg", "1.0", "linux-64")
	file, data := condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)
	e.upload(t, admin, "fp", file, data).want(t, http.StatusCreated)
	before := e.snapshot(t, "fp", "linux-64")
	for _, tc := range []struct {
		value string
		want  int
	}{
		{"notabool", http.StatusUnprocessableEntity},
		{"2", http.StatusUnprocessableEntity},
		{"truee", http.StatusUnprocessableEntity},
		{"", http.StatusConflict}, // empty means absent (FastAPI): the default
		{"true", http.StatusCreated},
		{"TRUE", http.StatusCreated},
		{"Yes", http.StatusCreated},
		{"on", http.StatusCreated},
		{"1", http.StatusCreated},
		{"T", http.StatusCreated},
		{"y", http.StatusCreated},
		{"false", http.StatusConflict},
		{"False", http.StatusConflict},
		{"OFF", http.StatusConflict},
		{"no", http.StatusConflict},
		{"0", http.StatusConflict},
		{"f", http.StatusConflict},
		{"N", http.StatusConflict},
	} {
		t.Run("form "+tc.value, func(t *testing.T) {
			body, ctype := multipartFields(t, [3]string{"force", "", tc.value}, [3]string{"files", file, string(data)})
			r := e.do(t, "POST", "/api/channels/fp/files/", admin, body, hdr{"Content-Type": ctype}).want(t, tc.want)
			if tc.want == http.StatusUnprocessableEntity {
				wantBoolError(t, r, "body", tc.value)
			}
		})
		t.Run("query "+tc.value, func(t *testing.T) {
			q := "?force=" + url.QueryEscape(tc.value)
			body, ctype := multipartFields(t, [3]string{"files", file, string(data)})
			r := e.do(t, "POST", "/api/channels/fp/files/"+q, admin, body, hdr{"Content-Type": ctype}).want(t, tc.want)
			if tc.want == http.StatusUnprocessableEntity {
				wantBoolError(t, r, "query", tc.value)
			}
			r = e.do(t, "POST", "/api/channels/fp/upload/"+file+q+"&sha256="+sha256Hex(data), admin, data, hdr{"Content-Type": "application/octet-stream"}).want(t, tc.want)
			if tc.want == http.StatusUnprocessableEntity {
				wantBoolError(t, r, "query", tc.value)
			}
		})
	}
	// Same bytes forced over themselves: nothing changed but the dates.
	e.get(t, "/get/fp/linux-64/"+file, "").want(t, http.StatusOK)
	if after := e.referencedBlobs(t); len(after) != len(before.blobs) {
		t.Errorf("referenced blobs %d -> %d", len(before.blobs), len(after))
	}
}

// wantBoolError checks a FastAPI bool_parsing detail at (where, "force").
func wantBoolError(t *testing.T, r *res, where, input string) {
	t.Helper()
	var body struct {
		Detail []struct {
			Type  string `json:"type"`
			Loc   []any  `json:"loc"`
			Msg   string `json:"msg"`
			Input any    `json:"input"`
		} `json:"detail"`
	}
	r.decode(t, &body)
	if len(body.Detail) != 1 {
		t.Fatalf("%v: want one detail entry", r)
	}
	d := body.Detail[0]
	if d.Type != "bool_parsing" || len(d.Loc) != 2 || d.Loc[0] != where || d.Loc[1] != "force" ||
		d.Msg != "Input should be a valid boolean, unable to interpret input" || d.Input != input {
		t.Errorf("%v: detail %+v", r, d)
	}
}
