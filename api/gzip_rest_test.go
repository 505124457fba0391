package api_test

import (
	"bytes"
	"compress/gzip"
	"github.com/condamesh/condamesh/node/nodetest"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
)

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not gzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// Issue #9 point 23: Accept-Encoding: gzip on repodata.json and
// current_repodata.json gets the precomputed gzip form (Content-Encoding:
// gzip, Vary: Accept-Encoding, its own ETag); no Accept-Encoding keeps
// identity; the .gz files are served as files; 304s and ranges hold for
// both forms. Run with the lean HTTP loop on and off.
func TestRESTGzipIndexes(t *testing.T) { inHTTPModes(t, testRESTGzipIndexes) }

func testRESTGzipIndexes(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "gz", false, admin)
	for _, s := range []condatest.Spec{pkgSpec("zipped", "1.0", "linux-64"), pkgSpec("zipped-noarch", "2.0", "noarch")} {
		e.upload(t, admin, "gz", condatest.Filename(s, ".conda"), condatest.Conda(t, s)).want(t, 201)
	}
	e.indexes(t, "gz")

	for _, p := range []string{"linux-64/repodata.json", "linux-64/current_repodata.json", "noarch/repodata.json", "noarch/current_repodata.json"} {
		t.Run(p, func(t *testing.T) {
			path := "/get/gz/" + p
			plain := e.get(t, path, "").want(t, 200)
			if plain.header.Get("Content-Encoding") != "" || plain.header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("identity: Content-Encoding %q, Vary %q", plain.header.Get("Content-Encoding"), plain.header.Get("Vary"))
			}
			plainTag := plain.header.Get("ETag")
			zipped := e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": "gzip"}).want(t, 200)
			gzTag := zipped.header.Get("ETag")
			h := zipped.header
			if h.Get("Content-Encoding") != "gzip" || h.Get("Vary") != "Accept-Encoding" || h.Get("Content-Type") != "application/json" {
				t.Errorf("gzip: Content-Encoding %q, Vary %q, Content-Type %q", h.Get("Content-Encoding"), h.Get("Vary"), h.Get("Content-Type"))
			}
			if gzTag == "" || gzTag == plainTag || h.Get("Cache-Control") != plain.header.Get("Cache-Control") {
				t.Errorf("gzip ETag %q (identity %q), Cache-Control %q", gzTag, plainTag, h.Get("Cache-Control"))
			}
			if h.Get("Content-Length") != strconv.Itoa(len(zipped.body)) || len(zipped.body) >= len(plain.body) {
				t.Errorf("gzip: Content-Length %q, %d bytes (identity %d)", h.Get("Content-Length"), len(zipped.body), len(plain.body))
			}
			if !bytes.Equal(gunzip(t, zipped.body), plain.body) {
				t.Fatal("gzip body does not decode to the identity body")
			}
			file := e.get(t, path+".gz", "").want(t, 200)
			if !bytes.Equal(file.body, zipped.body) || file.header.Get("Content-Encoding") != "" || file.header.Get("Content-Type") != "application/gzip" || file.header.Get("ETag") != gzTag {
				t.Errorf("%s.gz: Content-Encoding %q, Content-Type %q, ETag %q, same bytes %v", p, file.header.Get("Content-Encoding"), file.header.Get("Content-Type"), file.header.Get("ETag"), bytes.Equal(file.body, zipped.body))
			}

			for _, tc := range []struct {
				accept string // "" = no Accept-Encoding
				gzip   bool
			}{
				{"", false},
				{"identity", false},
				{"gzip, deflate, br, zstd", true}, // Python requests with urllib3 2
				{"deflate, gzip, br, zstd", true}, // curl --compressed
				{"gzip, deflate", true},           // conda's requests
				{"GZIP", true},
				{"x-gzip", true},
				{"br;q=1, gzip;q=0.001", true},
				{"gzip;q=0", false},
				{"gzip; q=0.000", false},
				{"gzip;q=bad", false},
				{"*", true},
				{"*;q=0", false},
				{"*, gzip;q=0", false},
				{"gzip;q=0, *", false},
				{"br, zstd", false},
			} {
				r := e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": tc.accept})
				if tc.accept == "" {
					r = e.get(t, path, "")
				}
				r.want(t, 200)
				if got := r.header.Get("Content-Encoding") == "gzip"; got != tc.gzip || (tc.gzip && !bytes.Equal(r.body, zipped.body)) || (!tc.gzip && !bytes.Equal(r.body, plain.body)) {
					t.Errorf("Accept-Encoding %q: Content-Encoding %q, want gzip %v", tc.accept, r.header.Get("Content-Encoding"), tc.gzip)
				}
			}

			// Revalidation: each form matches its own ETag only.
			for _, tc := range []struct {
				accept, inm string
				want        int
				gzip        bool
			}{
				{"gzip", gzTag, 304, false},
				{"", plainTag, 304, false},
				{"gzip", plainTag, 200, true},
				{"", gzTag, 200, false},
				{"gzip", plainTag + ", " + gzTag, 304, false},
			} {
				h := hdr{"If-None-Match": tc.inm}
				if tc.accept != "" {
					h["Accept-Encoding"] = tc.accept
				}
				r := e.do(t, "GET", path, "", nil, h).want(t, tc.want)
				if tc.want == 304 {
					wantTag := plainTag
					if tc.accept != "" {
						wantTag = gzTag
					}
					if r.header.Get("ETag") != wantTag || r.header.Get("Vary") != "Accept-Encoding" || r.header.Get("Content-Encoding") != "" || len(r.body) != 0 {
						t.Errorf("304 (%q, %s): ETag %q, Vary %q, Content-Encoding %q", tc.accept, tc.inm, r.header.Get("ETag"), r.header.Get("Vary"), r.header.Get("Content-Encoding"))
					}
				} else if (r.header.Get("Content-Encoding") == "gzip") != tc.gzip {
					t.Errorf("200 (%q, %s): Content-Encoding %q", tc.accept, tc.inm, r.header.Get("Content-Encoding"))
				}
			}
			lm := zipped.header.Get("Last-Modified")
			e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": "gzip", "If-Modified-Since": lm}).want(t, 304)

			// HEAD and ranges apply to the encoded bytes.
			r := e.do(t, "HEAD", path, "", nil, hdr{"Accept-Encoding": "gzip"}).want(t, 200)
			if r.header.Get("Content-Encoding") != "gzip" || r.header.Get("Content-Length") != strconv.Itoa(len(zipped.body)) || r.header.Get("ETag") != gzTag {
				t.Errorf("HEAD gzip: %v", r.header)
			}
			r = e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": "gzip", "Range": "bytes=0-9"}).want(t, 206)
			if !bytes.Equal(r.body, zipped.body[:10]) || r.header.Get("Content-Encoding") != "gzip" || r.header.Get("Content-Range") != "bytes 0-9/"+strconv.Itoa(len(zipped.body)) {
				t.Errorf("gzip range: %q %v", r.body, r.header)
			}

			// Go's own client asks for gzip and decodes it transparently.
			resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(e.url + path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !resp.Uncompressed || !bytes.Equal(body, plain.body) {
				t.Errorf("Go client: uncompressed %v, same body %v, %v", resp.Uncompressed, bytes.Equal(body, plain.body), err)
			}
		})
	}

	t.Run("other files keep identity", func(t *testing.T) {
		for _, p := range []string{"linux-64/repodata.json.zst", "linux-64/repodata.json.bz2", "linux-64/repodata_shards.msgpack.zst", "channeldata.json", "index.html", "linux-64/index.html", "linux-64/" + condatest.Filename(pkgSpec("zipped", "1.0", "linux-64"), ".conda")} {
			r := e.do(t, "GET", "/get/gz/"+p, "", nil, hdr{"Accept-Encoding": "gzip, deflate, br, zstd"}).want(t, 200)
			if ce := r.header.Get("Content-Encoding"); ce != "" {
				t.Errorf("%s: Content-Encoding %q, want none (served as stored)", p, ce)
			}
		}
	})

	t.Run("private channel token", func(t *testing.T) {
		e.newChannel(t, "gzpriv", true, admin)
		s := pkgSpec("secret", "1.0", "noarch")
		e.upload(t, admin, "gzpriv", condatest.Filename(s, ".conda"), condatest.Conda(t, s)).want(t, 201)
		e.do(t, "GET", "/get/gzpriv/noarch/repodata.json", "", nil, hdr{"Accept-Encoding": "gzip"}).want(t, 401)
		r := e.do(t, "GET", "/t/"+admin+"/get/gzpriv/noarch/repodata.json", "", nil, hdr{"Accept-Encoding": "gzip"}).want(t, 200)
		if r.header.Get("Content-Encoding") != "gzip" || !strings.Contains(string(gunzip(t, r.body)), "secret-1.0") {
			t.Errorf("token + gzip: %v", r.header)
		}
	})
}

// Issue #9 point 23: the channel ttl (Quetz's field) is the index files'
// Cache-Control max-age; packages and shards stay immutable.
func TestRESTIndexTTL(t *testing.T) { inHTTPModes(t, testRESTIndexTTL) }

func testRESTIndexTTL(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "ttl", "private": false, "ttl": 120}, nil).want(t, 201)
	s := pkgSpec("timed", "1.0", "noarch")
	file := condatest.Filename(s, ".conda")
	e.upload(t, admin, "ttl", file, condatest.Conda(t, s)).want(t, 201)
	e.indexes(t, "ttl")
	check := func(want string) {
		t.Helper()
		for _, p := range []string{"noarch/repodata.json", "noarch/current_repodata.json", "noarch/repodata.json.zst", "channeldata.json", "index.html"} {
			for _, accept := range []string{"", "gzip"} {
				h := hdr{}
				if accept != "" {
					h["Accept-Encoding"] = accept
				}
				if cc := e.do(t, "GET", "/get/ttl/"+p, "", nil, h).want(t, 200).header.Get("Cache-Control"); cc != want {
					t.Errorf("%s (Accept-Encoding %q): Cache-Control %q, want %q", p, accept, cc, want)
				}
			}
		}
		if cc := e.get(t, "/get/ttl/noarch/"+file, "").want(t, 200).header.Get("Cache-Control"); cc != immutable {
			t.Errorf("package: Cache-Control %q", cc)
		}
	}
	check("public, max-age=120")
	e.do(t, "PATCH", "/api/channels/ttl", admin, map[string]any{"ttl": 7}, nil).want(t, 200)
	check("public, max-age=7")
}

// TestProxyGzipIndexes: a proxy channel offers the same gzip forms as a
// local one, derived once from the upstream's repodata.json (the upstream
// here has no .gz), with their own ETags and revalidation.
func TestProxyGzipIndexes(t *testing.T) { inHTTPModes(t, testProxyGzipIndexes) }

func testProxyGzipIndexes(t *testing.T, mode ...nodetest.Option) {
	up := newRecordingUpstream(t)
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "pxgz", "private": false, "mirror_channel_url": up.URL + "/c", "mirror_mode": "proxy"}, nil).want(t, 201)
	for _, p := range []string{"linux-64/repodata.json", "linux-64/current_repodata.json"} {
		path := "/get/pxgz/" + p
		plain := e.get(t, path, "").want(t, 200)
		// The gzip form is derived in the background on first demand:
		// clients get the identity form until it is there.
		var zipped *res
		deadline := time.Now().Add(20 * time.Second)
		for {
			zipped = e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": "gzip, deflate"}).want(t, 200)
			if zipped.header.Get("Content-Encoding") != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		h := zipped.header
		if h.Get("Content-Encoding") != "gzip" || h.Get("Vary") != "Accept-Encoding" || plain.header.Get("Vary") != "Accept-Encoding" {
			t.Fatalf("%s: Content-Encoding %q, Vary %q / %q", p, h.Get("Content-Encoding"), h.Get("Vary"), plain.header.Get("Vary"))
		}
		if !bytes.Equal(gunzip(t, zipped.body), plain.body) {
			t.Fatalf("%s: the gzip form does not decode to the identity form", p)
		}
		gzTag := h.Get("ETag")
		if gzTag == "" || gzTag == plain.header.Get("ETag") {
			t.Fatalf("%s: gzip ETag %q, identity %q", p, gzTag, plain.header.Get("ETag"))
		}
		e.do(t, "GET", path, "", nil, hdr{"Accept-Encoding": "gzip", "If-None-Match": gzTag}).want(t, 304)
		if r := e.do(t, "GET", path, "", nil, hdr{"If-None-Match": gzTag}).want(t, 200); r.header.Get("Content-Encoding") != "" {
			t.Fatalf("%s: a client without gzip got %q", p, r.header.Get("Content-Encoding"))
		}
	}
}
