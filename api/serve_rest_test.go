package api_test

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
)

const immutable = "public, max-age=31536000, immutable"

// shardPath returns the path of the shard of pkg in a subdir, read from the
// published shard index.
func shardPath(t *testing.T, e *env, ch, subdir, pkg string) string {
	t.Helper()
	r := e.get(t, "/get/"+ch+"/"+subdir+"/repodata_shards.msgpack.zst", "").want(t, 200)
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	raw, err := dec.DecodeAll(r.body, nil)
	if err != nil {
		t.Fatalf("shard index: %v", err)
	}
	var idx struct {
		Info   map[string]any    `msgpack:"info"`
		Shards map[string][]byte `msgpack:"shards"`
	}
	if err := msgpack.Unmarshal(raw, &idx); err != nil {
		t.Fatalf("shard index: %v", err)
	}
	sum, ok := idx.Shards[pkg]
	if !ok || idx.Info["shards_base_url"] != "./shards/" {
		t.Fatalf("shard index = %+v, want a shard for %s", idx, pkg)
	}
	return subdir + "/shards/" + hex.EncodeToString(sum) + ".msgpack.zst"
}

// maxAge parses max-age out of a Cache-Control value (-1 if absent).
func maxAge(cc string) int {
	for _, d := range strings.Split(cc, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(d), "max-age="); ok {
			n, err := strconv.Atoi(v)
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// Case 64 and the HTTP semantics of /get: validators, 304s, ranges,
// lengths, media types, caching.
func TestRESTServing(t *testing.T) { inHTTPModes(t, testRESTServing) }

func testRESTServing(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "srv", false, admin)
	linux := pkgSpec("served", "1.0", "linux-64")
	linuxFile, linuxData := condatest.Filename(linux, ".tar.bz2"), condatest.TarBz2(t, linux)
	e.upload(t, admin, "srv", linuxFile, linuxData).want(t, 201)
	noarch := pkgSpec("served-noarch", "2.0", "noarch")
	noarchFile, noarchData := condatest.Filename(noarch, ".conda"), condatest.Conda(t, noarch)
	e.upload(t, admin, "srv", noarchFile, noarchData).want(t, 201)
	e.indexes(t, "srv")

	t.Run("headers", func(t *testing.T) {
		shard := shardPath(t, e, "srv", "linux-64", "served")
		for _, tc := range []struct {
			path  string
			ctype string // prefix; "" = not checked
			cache string // "immutable" or "ttl" (the channel's, Quetz's default 36000)
			want  []byte // nil = not checked
		}{
			{"linux-64/" + linuxFile, "", "immutable", linuxData},
			{"noarch/" + noarchFile, "", "immutable", noarchData},
			{shard, "", "immutable", nil},
			{"linux-64/repodata.json", "application/json", "ttl", nil},
			{"linux-64/repodata.json.zst", "", "ttl", nil},
			{"linux-64/repodata.json.bz2", "", "ttl", nil},
			{"linux-64/repodata.json.gz", "application/gzip", "ttl", nil},
			{"linux-64/current_repodata.json", "application/json", "ttl", nil},
			{"linux-64/current_repodata.json.gz", "application/gzip", "ttl", nil},
			{"linux-64/repodata_shards.msgpack.zst", "", "ttl", nil},
			{"noarch/repodata.json", "application/json", "ttl", nil},
			{"channeldata.json", "application/json", "ttl", nil},
			{"index.html", "text/html", "ttl", nil},
			{"linux-64/index.html", "text/html", "ttl", nil},
		} {
			t.Run(tc.path, func(t *testing.T) {
				p := "/get/srv/" + tc.path
				full := e.do(t, "GET", p, "", nil, nil).want(t, 200)
				h := full.header
				if tc.want != nil && !bytes.Equal(full.body, tc.want) {
					t.Errorf("body differs from the uploaded file")
				}
				if got := h.Get("Content-Length"); got != strconv.Itoa(len(full.body)) {
					t.Errorf("Content-Length = %q, body has %d bytes", got, len(full.body))
				}
				if got := h.Get("Content-Size"); got != strconv.Itoa(len(full.body)) {
					t.Errorf("Content-Size = %q, body has %d bytes", got, len(full.body))
				}
				if ce := h.Get("Content-Encoding"); ce != "" {
					t.Errorf("Content-Encoding = %q, want none (no Accept-Encoding: identity)", ce)
				}
				if tc.ctype != "" && !strings.HasPrefix(h.Get("Content-Type"), tc.ctype) {
					t.Errorf("Content-Type = %q, want %s", h.Get("Content-Type"), tc.ctype)
				}
				cc := h.Get("Cache-Control")
				switch tc.cache {
				case "immutable":
					if cc != immutable {
						t.Errorf("Cache-Control = %q, want %q", cc, immutable)
					}
				case "ttl":
					if cc != "public, max-age=36000" {
						t.Errorf("Cache-Control = %q, want the channel ttl's max-age=36000", cc)
					}
				}
				etag := h.Get("ETag")
				if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 3 {
					t.Fatalf("ETag = %q, want a strong ETag", etag)
				}
				lm, err := http.ParseTime(h.Get("Last-Modified"))
				if err != nil {
					t.Fatalf("Last-Modified %q: %v", h.Get("Last-Modified"), err)
				}

				// Conditional requests.
				r := e.do(t, "GET", p, "", nil, hdr{"If-None-Match": etag}).want(t, 304)
				if len(r.body) != 0 || r.header.Get("ETag") != etag {
					t.Errorf("304: body %d bytes, ETag %q", len(r.body), r.header.Get("ETag"))
				}
				e.do(t, "GET", p, "", nil, hdr{"If-None-Match": `"other", ` + etag}).want(t, 304)
				e.do(t, "GET", p, "", nil, hdr{"If-None-Match": `"other"`}).want(t, 200)
				e.do(t, "GET", p, "", nil, hdr{"If-Modified-Since": lm.UTC().Format(http.TimeFormat)}).want(t, 304)
				e.do(t, "GET", p, "", nil, hdr{"If-Modified-Since": lm.Add(-time.Hour).UTC().Format(http.TimeFormat)}).want(t, 200)

				// Ranges.
				if len(full.body) < 20 {
					t.Fatalf("file too small: %d bytes", len(full.body))
				}
				r = e.do(t, "GET", p, "", nil, hdr{"Range": "bytes=0-9"}).want(t, 206)
				if cr := r.header.Get("Content-Range"); cr != fmt.Sprintf("bytes 0-9/%d", len(full.body)) {
					t.Errorf("Content-Range = %q", cr)
				}
				if !bytes.Equal(r.body, full.body[:10]) || r.header.Get("Content-Length") != "10" {
					t.Errorf("range body %q, Content-Length %q", r.body, r.header.Get("Content-Length"))
				}
				r = e.do(t, "GET", p, "", nil, hdr{"Range": "bytes=-5"}).want(t, 206)
				if !bytes.Equal(r.body, full.body[len(full.body)-5:]) {
					t.Errorf("suffix range body %q", r.body)
				}
				e.do(t, "GET", p, "", nil, hdr{"Range": fmt.Sprintf("bytes=%d-", len(full.body)+10)}).want(t, 416)
				// If-Range with the current ETag honours the range.
				e.do(t, "GET", p, "", nil, hdr{"Range": "bytes=0-9", "If-Range": etag}).want(t, 206)
				e.do(t, "GET", p, "", nil, hdr{"Range": "bytes=0-9", "If-Range": `"stale"`}).want(t, 200)

				// HEAD.
				r = e.do(t, "HEAD", p, "", nil, nil).want(t, 200)
				if len(r.body) != 0 || r.header.Get("Content-Length") != strconv.Itoa(len(full.body)) || r.header.Get("ETag") != etag {
					t.Errorf("HEAD: body %d, Content-Length %q, ETag %q", len(r.body), r.header.Get("Content-Length"), r.header.Get("ETag"))
				}
			})
		}
	})

	t.Run("shards are content addressed", func(t *testing.T) {
		p := shardPath(t, e, "srv", "noarch", "served-noarch")
		r := e.get(t, "/get/srv/"+p, "").want(t, 200)
		name := strings.TrimSuffix(p[strings.LastIndex(p, "/")+1:], ".msgpack.zst")
		if sha256Hex(r.body) != name {
			t.Errorf("shard %s has sha256 %s", name, sha256Hex(r.body))
		}
	})

	t.Run("ETag follows content", func(t *testing.T) {
		before := e.get(t, "/get/srv/linux-64/repodata.json", "").want(t, 200)
		again := e.get(t, "/get/srv/linux-64/repodata.json", "").want(t, 200)
		if before.header.Get("ETag") != again.header.Get("ETag") {
			t.Errorf("ETag differs for the same content")
		}
		more := pkgSpec("served", "1.1", "linux-64")
		e.upload(t, admin, "srv", condatest.Filename(more, ".tar.bz2"), condatest.TarBz2(t, more)).want(t, 201)
		// Read-your-writes: the next fetch shows the upload.
		after := e.do(t, "GET", "/get/srv/linux-64/repodata.json", "", nil, hdr{"If-None-Match": before.header.Get("ETag")}).want(t, 200)
		if after.header.Get("ETag") == before.header.Get("ETag") || !strings.Contains(string(after.body), condatest.Filename(more, ".tar.bz2")) {
			t.Errorf("repodata.json after an upload: ETag %q (was %q)", after.header.Get("ETag"), before.header.Get("ETag"))
		}
	})

	t.Run("paths", func(t *testing.T) {
		for _, p := range []string{"/get/srv", "/get/srv/", "/get/SRV"} {
			if r := e.get(t, p, "").want(t, 200); !strings.Contains(string(r.body), "served") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
				t.Errorf("%s: not the channel index page", p)
			}
		}
		for _, p := range []string{"/get/srv/linux-64", "/get/srv/linux-64/"} {
			if r := e.get(t, p, "").want(t, 200); !strings.Contains(string(r.body), linuxFile) {
				t.Errorf("%s: not the subdir listing", p)
			}
		}
		r := e.get(t, "/get/srv/linux-64/nope-1.0-0.tar.bz2", "").wantErr(t, 404, "srv/linux-64/nope-1.0-0.tar.bz2 not found")
		if cc := r.header.Get("Cache-Control"); cc == immutable || maxAge(cc) > 600 {
			t.Errorf("404 Cache-Control = %q", cc)
		}
		e.get(t, "/get/srv/linux-64/nope.json", "").wantErr(t, 404, "nope.json not found")
		e.get(t, "/get/srv/noarch/"+linuxFile, "").want(t, 404)
		for _, p := range []string{
			"/get/srv/linux-64/..%2F..%2F..%2Fetc%2Fpasswd",
			"/get/srv/linux-64%2F..%2Fnoarch%2F" + noarchFile,
			"/get/srv/linux-64/%2E%2E/noarch/" + noarchFile,
			"/get/srv/noarch%5C" + noarchFile,
		} {
			if r := e.get(t, p, ""); r.status == 200 {
				t.Errorf("%s: 200", p)
			}
		}
	})

	// 64: tokens in the URL.
	t.Run("tokens", func(t *testing.T) {
		okey := e.newUser(t, "tok-owner", "member")
		mkey := e.newUser(t, "tok-member", "")
		other := e.newUser(t, "tok-other", "")
		e.newChannel(t, "srvpriv", true, okey)
		e.addMember(t, "srvpriv", "tok-member", "member")
		e.upload(t, okey, "srvpriv", noarchFile, noarchData).want(t, 201)

		pub := "/get/srv/noarch/current_repodata.json"
		if r := e.get(t, pub, "").want(t, 200); !strings.Contains(string(r.body), noarchFile) {
			t.Errorf("current_repodata.json lacks %s", noarchFile)
		}
		e.get(t, "/t/anything/get/srv/noarch/current_repodata.json", "").want(t, 200)
		e.get(t, "/t/"+mkey+"/get/srv/noarch/current_repodata.json", "").want(t, 200)

		priv := "/get/srvpriv/noarch/current_repodata.json"
		for _, tc := range []struct {
			who, path, key string
			want           int
		}{
			{"anonymous", priv, "", 401},
			{"invalid token", "/t/invalid-token/get/srvpriv/noarch/current_repodata.json", "", 401},
			{"non-member token", "/t/" + other + "/get/srvpriv/noarch/current_repodata.json", "", 403},
			{"non-member header", priv, other, 403},
			{"member token", "/t/" + mkey + "/get/srvpriv/noarch/current_repodata.json", "", 200},
			{"member header", priv, mkey, 200},
			{"member token, package", "/t/" + mkey + "/get/srvpriv/noarch/" + noarchFile, "", 200},
			{"member token, index", "/t/" + mkey + "/get/srvpriv", "", 200},
			{"anonymous package", "/get/srvpriv/noarch/" + noarchFile, "", 401},
			{"anonymous HEAD", priv, "", 401},
			{"member token, API", "/t/" + mkey + "/api/channels/srvpriv", "", 200},
			{"non-member token, API", "/t/" + other + "/api/channels/srvpriv", "", 403},
			// An explicit header wins over the token in the URL.
			{"header beats token", "/t/invalid-token/get/srvpriv/noarch/current_repodata.json", mkey, 200},
			{"expired token", "", "", 401},
		} {
			t.Run(tc.who, func(t *testing.T) {
				path := tc.path
				if tc.who == "expired token" {
					var k struct {
						Key string `json:"key"`
					}
					e.do(t, "POST", "/api/api-keys", mkey, map[string]any{"description": "old", "expire_at": "2001-02-03"}, nil).want(t, 201).decode(t, &k)
					path = "/t/" + k.Key + "/get/srvpriv/noarch/current_repodata.json"
				}
				method := "GET"
				if strings.Contains(tc.who, "HEAD") {
					method = "HEAD"
				}
				r := e.do(t, method, path, tc.key, nil, nil).want(t, tc.want)
				if tc.want == 200 && method == "GET" && strings.HasSuffix(path, noarchFile) && !bytes.Equal(r.body, noarchData) {
					t.Errorf("wrong package bytes")
				}
			})
		}
	})
}
