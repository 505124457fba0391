package api_test

import (
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestProxyStreamsColdPackages: a client missing a package on a proxy
// channel receives its first bytes while condamesh is still downloading it
// (large packages would otherwise make clients time out), the full file
// with the head a cached copy gets, and a response cut short (never a whole
// wrong file) when the upstream sends corrupt bytes, which are not kept.
// A package smaller than the server's write buffer is no exception: its
// first bytes do not wait for the download to end.
func TestProxyStreamsColdPackages(t *testing.T) { inHTTPModes(t, testProxyStreamsColdPackages) }

func testProxyStreamsColdPackages(t *testing.T, mode ...nodetest.Option) {
	good := make([]byte, 3<<20)
	_, _ = rand.Read(good)
	bad := make([]byte, 1<<20)
	_, _ = rand.Read(bad)
	small := make([]byte, 1<<10)
	_, _ = rand.Read(small)
	record := func(name string, b []byte) map[string]any {
		s, m := sha256.Sum256(b), md5.Sum(b)
		return map[string]any{"name": name, "version": "1", "build": "0", "build_number": 0, "depends": []any{},
			"sha256": hex.EncodeToString(s[:]), "md5": hex.EncodeToString(m[:]), "size": len(b), "subdir": "linux-64"}
	}
	repodata, _ := json.Marshal(map[string]any{"info": map[string]any{"subdir": "linux-64"}, "packages": map[string]any{},
		"packages.conda": map[string]any{"good-1-0.conda": record("good", good), "bad-1-0.conda": record("bad", bad), "small-1-0.conda": record("small", small)}})
	gate, smallGate := make(chan struct{}), make(chan struct{})
	var goodHits, badHits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/c/linux-64/repodata.json":
			_, _ = w.Write(repodata)
		case "/c/linux-64/good-1-0.conda":
			goodHits.Add(1)
			w.Header().Set("Content-Length", fmt.Sprint(len(good)))
			_, _ = w.Write(good[:len(good)/2])
			w.(http.Flusher).Flush()
			<-gate // the rest only when the test has seen the first half
			_, _ = w.Write(good[len(good)/2:])
		case "/c/linux-64/small-1-0.conda":
			w.Header().Set("Content-Length", fmt.Sprint(len(small)))
			_, _ = w.Write(small[:len(small)/2])
			w.(http.Flusher).Flush()
			<-smallGate
			_, _ = w.Write(small[len(small)/2:])
		case "/c/linux-64/bad-1-0.conda":
			badHits.Add(1)
			corrupt := append([]byte(nil), bad...)
			corrupt[len(corrupt)/3] ^= 0xff
			_, _ = w.Write(corrupt)
		default:
			http.NotFound(w, r)
		}
	}))
	defer up.Close()
	e := start(t, mode...)
	e.do(t, "POST", "/api/channels", admin, map[string]any{"name": "px", "private": false, "mirror_channel_url": up.URL + "/c", "mirror_mode": "proxy"}, nil).want(t, 201)
	e.get(t, "/get/px/linux-64/repodata.json", "").want(t, 200) // clients read the index first

	// Head and first half must arrive while the upstream holds back the
	// second half.
	var resp *http.Response
	first := make([]byte, len(good)/2-64<<10)
	got := make(chan error, 1)
	go func() {
		var err error
		if resp, err = http.Get(e.n.URL() + "/get/px/linux-64/good-1-0.conda"); err == nil {
			_, err = io.ReadFull(resp.Body, first)
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("first half while the upstream still sends: %v", err)
		}
	case <-time.After(20 * time.Second):
		close(gate)
		t.Fatal("nothing reached the client while the upstream was still sending")
	}
	defer resp.Body.Close()
	sum := sha256.Sum256(good)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(good)) || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Fatalf("cold miss head: %d, length %d, %q", resp.StatusCode, resp.ContentLength, resp.Header.Get("Cache-Control"))
	}
	close(gate)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || sha256.Sum256(append(first, rest...)) != sum {
		t.Fatalf("streamed body: %v, %d bytes", err, len(first)+len(rest))
	}
	cached := e.get(t, "/get/px/linux-64/good-1-0.conda", "").want(t, 200)
	if sha256.Sum256(cached.body) != sum || cached.header.Get("ETag") != resp.Header.Get("ETag") || goodHits.Load() != 1 {
		t.Fatalf("cached copy: ETag %q vs streamed %q, upstream hits %d", cached.header.Get("ETag"), resp.Header.Get("ETag"), goodHits.Load())
	}

	// 1 KiB: the head and the first half arrive while the upstream holds
	// back the rest (the server must not keep them in its write buffer).
	go func() {
		var err error
		var resp *http.Response
		if resp, err = http.Get(e.n.URL() + "/get/px/linux-64/small-1-0.conda"); err == nil {
			defer resp.Body.Close()
			b := make([]byte, len(small)/2)
			if _, err = io.ReadFull(resp.Body, b); err == nil && string(b) != string(small[:len(b)]) {
				err = fmt.Errorf("wrong first bytes")
			}
			if err == nil {
				got <- nil
				var rest []byte
				if rest, err = io.ReadAll(resp.Body); err == nil && string(append(b, rest...)) != string(small) {
					err = fmt.Errorf("wrong body")
				}
			}
		}
		got <- err
	}()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("small package's first half while the upstream still sends: %v", err)
		}
	case <-time.After(10 * time.Second):
		close(smallGate)
		t.Fatal("nothing of a small package reached the client while the upstream was still sending")
	}
	close(smallGate)
	if err := <-got; err != nil {
		t.Fatalf("small package: %v", err)
	}

	for i := 1; i <= 2; i++ {
		resp, err := http.Get(e.n.URL() + "/get/px/linux-64/bad-1-0.conda")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil || len(body) >= len(bad) {
			t.Fatalf("corrupt package, attempt %d: read %d of %d bytes, err %v: want the response cut short", i, len(body), len(bad), err)
		}
		if badHits.Load() != int64(i) {
			t.Fatalf("attempt %d: %d upstream requests: the corrupt copy was kept", i, badHits.Load())
		}
	}
}
