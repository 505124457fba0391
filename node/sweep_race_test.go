package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// TestSweepKeepsBlobAMirrorJustAdopted: a mirror sync takes a package
// whose bytes are already stored ("resume without downloading"). A sweep
// that marked live blobs before the sync's record was committed must not
// then delete the blob, or the mirror channel lists a file whose bytes
// are gone and later syncs never fetch it again (upToDate compares
// sha256). The sync adopts the blob (store.Adopt: verified now, under the
// CID's lock). The marker below runs the sync between the sweep's marking
// and its deletes, the window of a real sweep running beside a sync.
func TestSweepKeepsBlobAMirrorJustAdopted(t *testing.T) {
	n := nodetest.Start(t)
	ctx := context.Background()
	do := func(method, path, ctype string, body io.Reader) (int, []byte) {
		t.Helper()
		return call(t, n.URL(), nodetest.AdminKey, method, path, ctype, body)
	}
	// A package uploaded to a local channel, then deleted from it: its blob
	// stays until a sweep, unreferenced.
	if st, b := do("POST", "/api/channels", "", strings.NewReader(`{"name":"a","private":false}`)); st != 201 {
		t.Fatalf("create a: %d %s", st, b)
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	payload := make([]byte, 256<<10)
	for i := range payload {
		payload[i] = byte(rnd.Uint32())
	}
	spec := condatest.Spec{Name: "adopted", Version: "1.0", Build: "0", Files: map[string]string{"share/x.bin": string(payload)}}
	data, file := condatest.TarBz2(t, spec), condatest.Filename(spec, ".tar.bz2")
	if st, b := do("POST", "/api/channels/a/upload/"+file+"?sha256="+sha(data), "", bytes.NewReader(data)); st != 201 {
		t.Fatalf("upload: %d %s", st, b)
	}
	var repodata []byte
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, b := do("GET", "/get/a/noarch/repodata.json", "", nil)
		if st == 200 && bytes.Contains(b, []byte(file)) {
			repodata = b
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("repodata of a never listed %s: %d %s", file, st, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, b := do("DELETE", "/api/channels/a/packages/adopted", "", nil); st != 200 {
		t.Fatalf("delete package: %d %s", st, b)
	}
	x, err := store.CIDFromHex(sha(data))
	if err != nil {
		t.Fatal(err)
	}
	if !n.Store().Has(ctx, x) {
		t.Fatal("the blob should still be stored until a sweep")
	}

	// An upstream channel listing the same file.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/noarch/repodata.json" {
			w.Write(repodata)
			return
		}
		if strings.HasSuffix(r.URL.Path, file) {
			w.Write(data)
			return
		}
		http.NotFound(w, r)
	}))
	defer up.Close()
	body := `{"name":"m","private":false,"mirror_mode":"mirror","mirror_channel_url":"` + up.URL + `","actions":[]}`
	if st, b := do("POST", "/api/channels", "", strings.NewReader(body)); st != 201 {
		t.Fatalf("create mirror: %d %s", st, b)
	}

	// The sweep: mark what versions reference now, then (as a sync
	// running beside the sweep would) the mirror sync commits, then the
	// sweep deletes what it found unmarked and stale.
	marker := func(ctx context.Context, keep func(cid.Cid)) error {
		var live []cid.Cid
		err := n.Catalog().EachVersionSHA256(ctx, func(h string) error {
			if c, err := store.CIDFromHex(h); err == nil {
				live = append(live, c)
			}
			return nil
		})
		if err != nil {
			return err
		}
		st, b := do("PUT", "/api/channels/m/actions", "", strings.NewReader(`{"action":"synchronize_repodata"}`))
		if st != 200 {
			return fmt.Errorf("synchronize: %d %s", st, b)
		}
		var job struct{ ID int64 }
		_ = json.Unmarshal(b, &job)
		for deadline := time.Now().Add(20 * time.Second); ; {
			_, b := do("GET", fmt.Sprintf("/api/jobs/%d", job.ID), "", nil)
			if bytes.Contains(b, []byte(`"success"`)) || bytes.Contains(b, []byte(`"failed"`)) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("sync did not end: %s", b)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, c := range live {
			keep(c)
		}
		return nil
	}
	// The cutoff falls between the upload (the blob's last verification)
	// and the sync: a blob the sync re-verified (a Put of its bytes) is
	// kept, one it only looked up is not.
	nextSecond() // blob times are whole seconds
	cutoff := time.Now()
	nextSecond()
	if _, err := jobs.Sweep(ctx, n.Store(), time.Nanosecond, cutoff, false, marker); err != nil {
		t.Fatal(err)
	}
	v, err := n.Catalog().Version(ctx, "m", "noarch", file)
	if err != nil {
		t.Fatalf("the mirror did not record %s: %v", file, err)
	}
	if !n.Store().Has(ctx, x) {
		t.Fatalf("mirror channel m lists %s (sha256 %s) but the sweep deleted its blob", v.Filename, v.Sha256)
	}
}

// nextSecond waits until the wall clock has entered a new second.
func nextSecond() {
	start := time.Now().Truncate(time.Second)
	for time.Now().Truncate(time.Second).Equal(start) {
		time.Sleep(10 * time.Millisecond)
	}
}
