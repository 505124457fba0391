package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda"
	"github.com/condamesh/condamesh/conda/condatest"
)

// TestReindexAfterMetadataLoss mirrors a channel, then destroys the node's
// metadata (Pebble and the Raft log) keeping the blob files, restarts, and
// re-creates the mirror with "actions": ["reindex"] (the Quetz guide's
// recovery): the packages come back from the blobs with no upstream
// traffic, and a following synchronize_repodata downloads only what was
// lost (the small packages that lived inside Pebble).
func TestReindexAfterMetadataLoss(t *testing.T) {
	ng := startNginxLogged(t, true)
	up := &upstreamChannel{dir: filepath.Join(ng.root, "chan"), files: map[string][]byte{}, recs: map[string][]conda.Record{}, about: map[string]map[string]any{}}
	big := map[string]bool{}
	for i := range 8 {
		payload := make([]byte, 24<<10)
		_, _ = rand.Read(payload)
		spec := condatest.Spec{Name: fmt.Sprintf("big%d", i), Version: "1.0", Build: "0", Subdir: "linux-64", Files: map[string]string{"data.bin": hex.EncodeToString(payload)}}
		up.add(t, "linux-64", spec, ".conda")
		big["linux-64/"+condatest.Filename(spec, ".conda")] = true
	}
	for i := range 3 {
		up.add(t, "noarch", condatest.Spec{Name: fmt.Sprintf("tiny%d", i), Version: "1.0", Build: "0", Noarch: "generic"}, ".tar.bz2")
	}
	up.write(t)
	dir := t.TempDir()
	s := startServer(t, dir)
	body := fmt.Sprintf(`{"name":"recover","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"mirror"`, ng.url)
	s.mustDo(201, "POST", "/api/channels", body+"}")
	s.waitJob(s.latestJob("synchronize_repodata").ID, 60*time.Second)
	s.stop()

	// Metadata lost: the Pebble database (index of blobs included) and the
	// Raft log. The blob files survive.
	for _, d := range []string{filepath.Join(dir, "store", "pebble"), filepath.Join(dir, "raft")} {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}
	s = startServer(t, dir)
	before := len(ng.requests(t))
	s.mustDo(201, "POST", "/api/channels", body+`,"actions":["reindex"]}`)
	s.waitJob(s.latestJob("reindex").ID, 60*time.Second)
	if n := len(ng.requests(t)) - before; n != 0 {
		t.Fatalf("reindex made %d upstream requests, want 0", n)
	}
	names := s.packageNames("recover")
	if len(names) != 8 || !strings.HasPrefix(names[0], "big") {
		t.Fatalf("after reindex the mirror lists %v, want the 8 packages whose blobs were files", names)
	}
	for p := range big {
		if got := download(t, s.url+"/get/recover/"+p); sha256Hex(got) != up.sha(p) {
			t.Fatalf("%s: wrong bytes after reindex", p)
		}
	}
	var j jobJSON
	decodeJSON(t, s.mustDo(200, "PUT", "/api/channels/recover/actions", `{"action":"synchronize_repodata"}`), &j)
	s.waitJob(j.ID, 60*time.Second)
	var fetched []string
	for _, l := range ng.requests(t)[before:] {
		if strings.HasSuffix(l, ".conda") || strings.HasSuffix(l, ".tar.bz2") {
			fetched = append(fetched, l)
		}
	}
	if len(fetched) != 3 {
		t.Fatalf("sync after reindex downloaded %v, want only the 3 lost small packages", fetched)
	}
	for p := range up.files {
		if got := download(t, s.url+"/get/recover/"+p); sha256Hex(got) != up.sha(p) {
			t.Fatalf("%s: wrong bytes after the sync", p)
		}
	}
}
