package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"mime/multipart"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/api"
	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

const admin = nodetest.AdminKey

// env is one real node and HTTP clients talking to it.
type env struct {
	n   *nodetest.Node
	url string
	hc  *http.Client
	// gc sends the bodiless GETs and HEADs of /get paths on connections
	// of their own: a connection that carried any other request belongs
	// to net/http for the rest of its life, so with one pool for all a
	// node's lean loop would answer next to nothing.
	gc  *http.Client
	hot atomic.Int64 // requests sent through gc
}

func start(t *testing.T, opts ...nodetest.Option) *env {
	t.Helper()
	n := nodetest.Start(t, opts...)
	client := func() *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.DisableCompression = true // see Content-Encoding as the server sends it
		hc := &http.Client{
			Transport: tr,
			Timeout:   30 * time.Second,
			// Redirects are part of the API under test.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	e := &env{n: n, url: n.URL(), hc: client(), gc: client()}
	t.Cleanup(func() {
		// In lean mode the lean loop answers the conda-client requests
		// (those of other clients, such as a mirroring node, count too).
		if on, answered := e.n.LeanAnswered(); on && answered < uint64(e.hot.Load()) {
			t.Errorf("lean HTTP mode: the lean loop answered %d of the %d /get requests", answered, e.hot.Load())
		}
	})
	return e
}

// restart restarts the node on its data, in the same mode.
func (e *env) restart(t *testing.T) {
	t.Helper()
	e.n = e.n.Restart(t)
	e.url = e.n.URL()
	e.hot.Store(0) // the new node's lean loop counts from 0
}

// startIn starts a node in an HTTP mode (see inHTTPModes) with more
// options.
func startIn(t *testing.T, mode []nodetest.Option, opts ...nodetest.Option) *env {
	t.Helper()
	return start(t, slices.Concat(mode, opts)...)
}

// inHTTPModes runs test once for each way a node serves HTTP (the lean
// loop on and off), with the options that start a node that way: for the
// tests of what clients see on the wire.
func inHTTPModes(t *testing.T, test func(t *testing.T, mode ...nodetest.Option)) {
	for _, m := range nodetest.HTTPModes {
		t.Run(m.Name, func(t *testing.T) { test(t, m.Opts...) })
	}
}

// res is a fully read HTTP response.
type res struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

func (r *res) String() string {
	return fmt.Sprintf("%s %s -> %d %s", r.method, r.path, r.status, bytes.TrimSpace(r.body))
}

// hdr is extra request headers.
type hdr map[string]string

// do sends a request. key "" means anonymous. body may be nil, []byte,
// string (sent raw) or any other value (sent as JSON).
func (e *env) do(t testing.TB, method, path, key string, body any, h hdr) *res {
	t.Helper()
	var rd io.Reader
	ctype := ""
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd, ctype = strings.NewReader(b), "application/json"
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd, ctype = bytes.NewReader(j), "application/json"
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	for k, v := range h {
		req.Header.Set(k, v)
	}
	hc := e.hc
	if rd == nil && (method == "GET" || method == "HEAD") && api.HotPath(req.URL.RequestURI()) {
		hc = e.gc
		e.hot.Add(1)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return &res{method: method, path: path, status: resp.StatusCode, header: resp.Header, body: b}
}

func (e *env) get(t testing.TB, path, key string) *res { return e.do(t, "GET", path, key, nil, nil) }

// want fails unless the status is one of codes.
func (r *res) want(t testing.TB, codes ...int) *res {
	t.Helper()
	if !slices.Contains(codes, r.status) {
		t.Fatalf("%v; want status %v", r, codes)
	}
	return r
}

// wantErr checks the status and that the detail contains every substring.
func (r *res) wantErr(t testing.TB, code int, subs ...string) *res {
	t.Helper()
	r.want(t, code)
	d := r.detail(t)
	for _, s := range subs {
		if !strings.Contains(d, s) {
			t.Errorf("%v: detail %q lacks %q", r, d, s)
		}
	}
	return r
}

// detail returns the "detail" of an error body: the string, or the
// strings / msg fields of a list joined with "\n".
func (r *res) detail(t testing.TB) string {
	t.Helper()
	var body struct {
		Detail json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || body.Detail == nil {
		t.Fatalf("%v: body is not {\"detail\": ...}", r)
	}
	var s string
	if json.Unmarshal(body.Detail, &s) == nil {
		return s
	}
	var list []json.RawMessage
	if err := json.Unmarshal(body.Detail, &list); err != nil {
		t.Fatalf("%v: detail is neither a string nor a list", r)
	}
	var parts []string
	for _, item := range list {
		var str string
		var fe struct {
			Msg string `json:"msg"`
		}
		switch {
		case json.Unmarshal(item, &str) == nil:
			parts = append(parts, str)
		case json.Unmarshal(item, &fe) == nil:
			parts = append(parts, fe.Msg)
		}
	}
	return strings.Join(parts, "\n")
}

// detailList fails unless detail is a list and returns its raw entries.
func (r *res) detailList(t testing.TB) []json.RawMessage {
	t.Helper()
	var body struct {
		Detail []json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil || len(body.Detail) == 0 {
		t.Fatalf("%v: detail is not a non-empty list", r)
	}
	return body.Detail
}

func (r *res) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("%v: decode: %v", r, err)
	}
}

// obj decodes a JSON object body.
func (r *res) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.decode(t, &m)
	return m
}

// list decodes a JSON array-of-objects body.
func (r *res) list(t testing.TB) []map[string]any {
	t.Helper()
	var l []map[string]any
	r.decode(t, &l)
	return l
}

// newUser creates a user with a server role ("" for none) and returns its
// API key.
func (e *env) newUser(t testing.TB, name, role string) string {
	t.Helper()
	body := map[string]any{"username": name}
	if role != "" {
		body["role"] = role
	}
	r := e.do(t, "POST", "/api/users", admin, body, nil).want(t, http.StatusCreated)
	var out struct {
		APIKey string `json:"api_key"`
	}
	r.decode(t, &out)
	if out.APIKey == "" {
		t.Fatalf("%v: no api_key", r)
	}
	return out.APIKey
}

func (e *env) newChannel(t testing.TB, name string, private bool, key string) {
	t.Helper()
	e.do(t, "POST", "/api/channels", key, map[string]any{"name": name, "private": private}, nil).want(t, http.StatusCreated)
}

func (e *env) addMember(t testing.TB, ch, user, role string) {
	t.Helper()
	e.do(t, "POST", "/api/channels/"+ch+"/members", admin, map[string]any{"username": user, "role": role}, nil).want(t, http.StatusCreated)
}

func (e *env) addPackageMember(t testing.TB, ch, pkg, user, role string) {
	t.Helper()
	e.do(t, "POST", "/api/channels/"+ch+"/packages/"+pkg+"/members", admin, map[string]any{"username": user, "role": role}, nil).want(t, http.StatusCreated)
}

// multipartBody builds a files/ upload body.
func multipartBody(t testing.TB, files map[string][]byte, force string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if force != "" {
		if err := mw.WriteField("force", force); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		w, err := mw.CreateFormFile("files", name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(files[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), mw.FormDataContentType()
}

// uploadFiles POSTs to /api/channels/{c}/files/ (or, with pkg set, to
// /api/channels/{c}/packages/{pkg}/files/).
func (e *env) uploadFiles(t testing.TB, key, ch, pkg string, files map[string][]byte, force bool) *res {
	t.Helper()
	f := ""
	if force {
		f = "true"
	}
	body, ctype := multipartBody(t, files, f)
	path := "/api/channels/" + ch + "/files/"
	if pkg != "" {
		path = "/api/channels/" + ch + "/packages/" + pkg + "/files/"
	}
	return e.do(t, "POST", path, key, body, hdr{"Content-Type": ctype})
}

func (e *env) upload(t testing.TB, key, ch, filename string, data []byte) *res {
	t.Helper()
	return e.uploadFiles(t, key, ch, "", map[string][]byte{filename: data}, false)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// uploadRaw POSTs the body to /api/channels/{c}/upload/{filename}.
func (e *env) uploadRaw(t testing.TB, key, ch, filename string, data []byte, sha string, force bool) *res {
	t.Helper()
	q := url.Values{"sha256": {sha}}
	if force {
		q.Set("force", "true")
	}
	return e.do(t, "POST", "/api/channels/"+ch+"/upload/"+url.PathEscape(filename)+"?"+q.Encode(), key, data, hdr{"Content-Type": "application/octet-stream"})
}

// pkgSpec is a small package in subdir.
func pkgSpec(name, version, subdir string) condatest.Spec {
	return condatest.Spec{
		Name: name, Version: version, Build: "h0_0", Subdir: subdir,
		Files: map[string]string{"share/" + name + "/README": name + " " + version + "\n"},
	}
}

// repodata fetches and decodes a subdir's repodata.json.
func (e *env) repodata(t testing.TB, ch, subdir, key string) map[string]map[string]any {
	t.Helper()
	r := e.get(t, "/get/"+ch+"/"+subdir+"/repodata.json", key).want(t, http.StatusOK)
	var rd struct {
		Packages      map[string]map[string]any `json:"packages"`
		PackagesConda map[string]map[string]any `json:"packages.conda"`
	}
	r.decode(t, &rd)
	all := map[string]map[string]any{}
	for k, v := range rd.Packages {
		all[k] = v
	}
	for k, v := range rd.PackagesConda {
		all[k] = v
	}
	return all
}

// blobs lists the node's stored blobs (CID -> size).
func (e *env) blobs(t testing.TB) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	if err := e.n.Store().List(context.Background(), func(b store.BlobInfo) error {
		out[b.CID.String()] = b.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// referencedBlobs lists the node's blobs that a sweep keeps however late
// it runs (CID -> size): those a record or a published index references.
// Blobs of failed uploads are not among them: they wait for the sweep.
func (e *env) referencedBlobs(t testing.TB) map[string]int64 {
	t.Helper()
	all := e.blobs(t)
	res, err := e.n.Sweep(context.Background(), time.Now().AddDate(100, 0, 0), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range res.CIDs {
		delete(all, c.String())
	}
	return all
}

// describeBlob names a blob for a failure message: size and first bytes.
func (e *env) describeBlob(c string) string {
	id, err := cid.Decode(c)
	if err != nil {
		return c
	}
	b, err := e.n.Store().Open(context.Background(), id)
	if err != nil {
		return fmt.Sprintf("%s (%v)", c, err)
	}
	defer b.Close()
	head := make([]byte, 60)
	n, _ := io.ReadFull(b, head)
	return fmt.Sprintf("%s: %d bytes %q", c, b.Info.Size, head[:n])
}

// state is what a channel has stored, as clients and the store see it.
type state struct {
	packages    string            // GET /api/channels/{c}/packages
	repodata    map[string]string // subdir -> status and repodata.json bytes
	channeldata string
	size        int64            // the channel's recorded size (quota accounting)
	blobs       map[string]int64 // referenced blobs (referencedBlobs)
}

// indexes fetches channeldata.json and the repodata.json of its subdirs
// (plus extra ones). Fetching an index waits for the indexer to be fresh.
// It polls until channeldata.json agrees with the repodata (same package
// names, each with its latest version and its subdirs): the indexer can
// publish a channeldata.json that is one write behind yet marked fresh
// (it reads the channel generation after the records; see the report),
// which the next regeneration repairs.
func (e *env) indexes(t testing.TB, ch string, extra ...string) (channeldata string, repodata map[string]string) {
	t.Helper()
	eventually(t, "consistent indexes of "+ch, func() bool {
		r := e.get(t, "/get/"+url.PathEscape(ch)+"/channeldata.json", admin).want(t, http.StatusOK)
		var cd struct {
			Packages map[string]struct {
				Version string   `json:"version"`
				Subdirs []string `json:"subdirs"`
			} `json:"packages"`
			Subdirs []string `json:"subdirs"`
		}
		r.decode(t, &cd)
		channeldata, repodata = string(r.body), map[string]string{}
		latest := map[string]string{}
		subdirs := map[string][]string{}
		known, err := e.n.Catalog().Subdirs(context.Background(), ch)
		if err != nil {
			t.Fatal(err)
		}
		all := slices.Compact(slices.Sorted(slices.Values(slices.Concat(cd.Subdirs, extra, known))))
		for _, sd := range all {
			r := e.get(t, "/get/"+url.PathEscape(ch)+"/"+sd+"/repodata.json", admin)
			repodata[sd] = fmt.Sprint(r.status, " ", string(r.body))
			if r.status != http.StatusOK {
				continue
			}
			var rd struct {
				Packages      map[string]struct{ Name, Version string } `json:"packages"`
				PackagesConda map[string]struct{ Name, Version string } `json:"packages.conda"`
			}
			r.decode(t, &rd)
			for _, m := range []map[string]struct{ Name, Version string }{rd.Packages, rd.PackagesConda} {
				for _, rec := range m {
					if v, ok := latest[rec.Name]; !ok || conda.CompareVersions(rec.Version, v) > 0 {
						latest[rec.Name] = rec.Version
					}
					if !slices.Contains(subdirs[rec.Name], sd) {
						subdirs[rec.Name] = append(subdirs[rec.Name], sd)
					}
				}
			}
		}
		if len(latest) != len(cd.Packages) {
			return false
		}
		for _, sd := range subdirs {
			for _, d := range sd {
				if !slices.Contains(cd.Subdirs, d) {
					return false
				}
			}
		}
		for name, p := range cd.Packages {
			slices.Sort(subdirs[name])
			slices.Sort(p.Subdirs)
			if latest[name] != p.Version || !slices.Equal(subdirs[name], p.Subdirs) {
				return false
			}
		}
		return true
	})
	return channeldata, repodata
}

// snapshot records a channel's state. The blobs are taken last, once the
// indexes of every channel are fresh; they are the referenced ones, as a
// failed upload may leave a blob behind for the sweep (never one that
// anything references).
func (e *env) snapshot(t testing.TB, ch string, subdirs ...string) state {
	t.Helper()
	s := state{}
	s.packages = string(e.get(t, "/api/channels/"+ch+"/packages", admin).want(t, http.StatusOK).body)
	s.channeldata, s.repodata = e.indexes(t, ch, subdirs...)
	c, err := e.n.Catalog().Channel(context.Background(), ch)
	if err != nil {
		t.Fatal(err)
	}
	s.size = c.Size
	e.settle(t)
	s.blobs = e.referencedBlobs(t)
	return s
}

// settle waits until the indexes of every channel are fresh, so no index
// blob is being written in the background (the blob count is global).
func (e *env) settle(t testing.TB) {
	t.Helper()
	chans, err := e.n.Catalog().Channels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range chans {
		if ch.MirrorMode != "proxy" {
			e.indexes(t, ch.Name)
		}
	}
}

// unchanged fails if the channel's state differs from before.
func (e *env) unchanged(t testing.TB, ch string, before state) {
	t.Helper()
	subdirs := make([]string, 0, len(before.repodata))
	for sd := range before.repodata {
		subdirs = append(subdirs, sd)
	}
	after := e.snapshot(t, ch, subdirs...)
	if after.packages != before.packages {
		t.Errorf("package list changed:\nbefore %s\nafter  %s", before.packages, after.packages)
	}
	if after.channeldata != before.channeldata {
		t.Errorf("channeldata.json changed:\nbefore %s\nafter  %s", before.channeldata, after.channeldata)
	}
	for sd, b := range before.repodata {
		if after.repodata[sd] != b {
			t.Errorf("%s/repodata.json changed:\nbefore %s\nafter  %s", sd, b, after.repodata[sd])
		}
	}
	if len(after.repodata) != len(before.repodata) {
		t.Errorf("subdirs changed: %d -> %d", len(before.repodata), len(after.repodata))
	}
	if after.size != before.size {
		t.Errorf("channel size changed: %d -> %d", before.size, after.size)
	}
	for c := range after.blobs {
		if _, ok := before.blobs[c]; !ok {
			t.Errorf("new blob %s", e.describeBlob(c))
		}
	}
	for c, size := range before.blobs {
		if _, ok := after.blobs[c]; !ok {
			t.Errorf("blob %s (%d bytes) is gone", c, size)
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// names returns the "name" field of each object.
func names(l []map[string]any) []string {
	out := make([]string, 0, len(l))
	for _, m := range l {
		out = append(out, fmt.Sprint(m["name"]))
	}
	slices.Sort(out)
	return out
}
