package api_test

import (
	"context"
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/store"
)

// filePkgSpec is pkgSpec with an incompressible payload, so its archives
// are file blobs (above the store's inline threshold) that take a while to
// write: concurrent uploads of them overlap in the store.
func filePkgSpec(name, version, subdir string) condatest.Spec {
	s := pkgSpec(name, version, subdir)
	rnd := rand.New(rand.NewPCG(uint64(len(name)), uint64(len(version))))
	b := make([]byte, 256<<10)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	s.Files["share/"+name+"/data.bin"] = string(b)
	return s
}

func (e *env) hasBlob(t testing.TB, data []byte) bool {
	t.Helper()
	c, err := store.CIDFromHex(sha256Hex(data))
	if err != nil {
		t.Fatal(err)
	}
	return e.n.Store().Has(context.Background(), c)
}

// wantServed fails unless the package file downloads with data's sha256
// and repodata lists it with that sha256.
func (e *env) wantServed(t testing.TB, ch, subdir, filename string, data []byte) {
	t.Helper()
	want := sha256Hex(data)
	if rec := e.repodata(t, ch, subdir, admin)[filename]; rec == nil || rec["sha256"] != want {
		t.Errorf("%s/%s: repodata record %v, want sha256 %s", ch, filename, rec, want)
	}
	r := e.get(t, "/get/"+ch+"/"+subdir+"/"+filename, admin)
	if r.status != http.StatusOK || sha256Hex(r.body) != want {
		t.Errorf("%s/%s: download %d with sha256 %s, want 200 with %s", ch, filename, r.status, sha256Hex(r.body), want)
	}
}

// TestConcurrentUploadsOfOneFile: uploads of the same bytes that race
// each other never lose the blob the winner's record points to (issue 9
// point 1: seven losers' clean-up deleted it, so the listed file answered
// 404 for good).
func TestConcurrentUploadsOfOneFile(t *testing.T) { inHTTPModes(t, testConcurrentUploadsOfOneFile) }

func testConcurrentUploadsOfOneFile(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	const n = 8
	for _, tc := range []struct {
		name     string
		channels int // 1: all into one channel (one 201, the rest 409)
		raw      bool
	}{
		{"files route one channel", 1, false},
		{"upload route one channel", 1, true},
		{"files route one channel each", n, false},
		{"upload route one channel each", n, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Several rounds, each with new bytes: the race needs the
			// uploads' store writes to overlap.
			for round := range 3 {
				spec := filePkgSpec(fmt.Sprintf("race-%d", round), fmt.Sprintf("1.%d", len(tc.name)), "linux-64")
				file, data := condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)
				chans := make([]string, n)
				for i := range chans {
					chans[i] = fmt.Sprintf("race-%d-%d-%d", len(tc.name), round, i%tc.channels)
					if i < tc.channels {
						e.newChannel(t, chans[i], false, admin)
					}
				}
				statuses := make([]int, n)
				var wg sync.WaitGroup
				start := make(chan struct{})
				for i := range n {
					wg.Go(func() {
						<-start
						if tc.raw {
							statuses[i] = e.uploadRaw(t, admin, chans[i], file, data, sha256Hex(data), false).status
						} else {
							statuses[i] = e.upload(t, admin, chans[i], file, data).status
						}
					})
				}
				close(start)
				wg.Wait()
				created := 0
				for _, s := range statuses {
					switch s {
					case http.StatusCreated:
						created++
					case http.StatusConflict:
					default:
						t.Errorf("round %d: statuses %v: want only 201 and 409", round, statuses)
					}
				}
				if created != tc.channels {
					t.Errorf("round %d: %d uploads created, want %d (statuses %v)", round, created, tc.channels, statuses)
				}
				for _, ch := range chans[:tc.channels] {
					e.wantServed(t, ch, "linux-64", file, data)
				}
			}
		})
	}
}

// slowUpload is a files/ upload whose body the test writes part by part.
type slowUpload struct {
	mw   *multipart.Writer
	pw   *io.PipeWriter
	done chan *res
}

func (e *env) startSlowUpload(t *testing.T, ch string) *slowUpload {
	t.Helper()
	pr, pw := io.Pipe()
	u := &slowUpload{mw: multipart.NewWriter(pw), pw: pw, done: make(chan *res, 1)}
	req, err := http.NewRequest("POST", e.url+"/api/channels/"+url.PathEscape(ch)+"/files/", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", u.mw.FormDataContentType())
	req.Header.Set("X-API-Key", admin)
	go func() {
		resp, err := e.hc.Do(req)
		if err != nil {
			u.done <- &res{status: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		u.done <- &res{method: "POST", path: req.URL.Path, status: resp.StatusCode, body: b}
	}()
	t.Cleanup(func() { _ = pw.CloseWithError(io.ErrUnexpectedEOF) })
	return u
}

// part starts a files part (which ends the one before) and returns the
// writer of its bytes.
func (u *slowUpload) part(t *testing.T, name string) io.Writer {
	t.Helper()
	w, err := u.mw.CreateFormFile("files", name)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (u *slowUpload) finish(t *testing.T) *res {
	t.Helper()
	if err := u.mw.Close(); err != nil {
		t.Fatal(err)
	}
	_ = u.pw.Close()
	return <-u.done
}

// TestFailedUploadKeepsSharedBlob: an upload that fails after it stored a
// file (a later part is refused, or publishing fails) deletes no blob,
// even one its own write created: another request may have published a
// record for the same bytes meanwhile. What nothing references goes only
// with the blob sweep, after its grace period.
func TestFailedUploadKeepsSharedBlob(t *testing.T) { inHTTPModes(t, testFailedUploadKeepsSharedBlob) }

func testFailedUploadKeepsSharedBlob(t *testing.T, mode ...nodetest.Option) {
	const grace = time.Hour
	e := startIn(t, mode, func(c *node.Config) { c.BlobGrace = grace })
	for i, tc := range []struct {
		name string
		// second returns the part that makes the first upload fail, and
		// the status it fails with.
		second func(t *testing.T, ch string) (string, []byte, int)
	}{
		{"later part refused", func(t *testing.T, ch string) (string, []byte, int) {
			s := condatest.WithEscapingMember(pkgSpec("zz-evil", "1.0", "linux-64"))
			return condatest.Filename(s, ".tar.bz2"), condatest.TarBz2(t, s), http.StatusBadRequest
		}},
		{"publish refuses a duplicate", func(t *testing.T, ch string) (string, []byte, int) {
			old := filePkgSpec("zz-dup", "1.0", "linux-64")
			e.upload(t, admin, ch, condatest.Filename(old, ".tar.bz2"), condatest.TarBz2(t, old)).want(t, http.StatusCreated)
			changed := old
			changed.Files = map[string]string{"share/changed": "other bytes\n"}
			return condatest.Filename(changed, ".tar.bz2"), condatest.TarBz2(t, changed), http.StatusConflict
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			loser, winner := fmt.Sprintf("loser-%d", i), fmt.Sprintf("winner-%d", i)
			e.newChannel(t, loser, false, admin)
			e.newChannel(t, winner, false, admin)
			secondName, secondData, status := tc.second(t, loser)
			spec := filePkgSpec(fmt.Sprintf("shared-%d", i), "1.0", "linux-64")
			file, data := condatest.Filename(spec, ".tar.bz2"), condatest.TarBz2(t, spec)

			// The loser's first part is stored (its Put creates the blob)...
			u := e.startSlowUpload(t, loser)
			if _, err := u.part(t, file).Write(data); err != nil {
				t.Fatal(err)
			}
			second := u.part(t, secondName)
			eventually(t, "the first part stored", func() bool { return e.hasBlob(t, data) })
			// ...another request publishes the same bytes...
			e.upload(t, admin, winner, file, data).want(t, http.StatusCreated)
			// ...and then the loser fails.
			if _, err := second.Write(secondData); err != nil {
				t.Fatal(err)
			}
			u.finish(t).want(t, status)

			e.wantServed(t, winner, "linux-64", file, data)
			e.get(t, "/get/"+loser+"/linux-64/"+file, admin).want(t, http.StatusNotFound)
			// The failed part's own blob (if it was stored) stays within
			// the grace period and goes with the sweep after it.
			ctx := context.Background()
			if _, err := e.n.Sweep(ctx, time.Now(), false); err != nil {
				t.Fatal(err)
			}
			if !e.hasBlob(t, data) {
				t.Fatal("sweep within the grace period deleted the shared blob")
			}
			stored := e.hasBlob(t, secondData)
			if _, err := e.n.Sweep(ctx, time.Now().Add(grace+time.Minute), false); err != nil {
				t.Fatal(err)
			}
			if !e.hasBlob(t, data) {
				t.Fatal("sweep deleted a referenced blob")
			}
			if stored && e.hasBlob(t, secondData) {
				t.Error("the failed part's blob survived a sweep after the grace period")
			}
			e.wantServed(t, winner, "linux-64", file, data)
		})
	}
}

// TestFailedUploadBlobWaitsForSweep: a refused upload's blob, referenced
// by nothing, stays until a sweep after the grace period removes it.
func TestFailedUploadBlobWaitsForSweep(t *testing.T) {
	inHTTPModes(t, testFailedUploadBlobWaitsForSweep)
}

func testFailedUploadBlobWaitsForSweep(t *testing.T, mode ...nodetest.Option) {
	const grace = time.Hour
	e := startIn(t, mode, func(c *node.Config) { c.BlobGrace = grace })
	e.newChannel(t, "orphan", false, admin)
	good := filePkgSpec("orphan-good", "1.0", "linux-64")
	goodFile, goodData := condatest.Filename(good, ".tar.bz2"), condatest.TarBz2(t, good)
	bad := condatest.WithEscapingMember(pkgSpec("orphan-zbad", "1.0", "linux-64")) // sorts after the good one
	e.uploadFiles(t, admin, "orphan", "", map[string][]byte{
		goodFile: goodData, condatest.Filename(bad, ".tar.bz2"): condatest.TarBz2(t, bad),
	}, false).want(t, http.StatusBadRequest)
	e.get(t, "/get/orphan/linux-64/"+goodFile, admin).want(t, http.StatusNotFound)
	if !e.hasBlob(t, goodData) {
		t.Fatal("the refused upload's blob was deleted by the request, not by the sweep")
	}
	ctx := context.Background()
	for _, tc := range []struct {
		at   time.Duration
		kept bool
	}{
		{0, true},
		{grace - time.Minute, true},
		{grace + time.Minute, false},
	} {
		if _, err := e.n.Sweep(ctx, time.Now().Add(tc.at), false); err != nil {
			t.Fatal(err)
		}
		if got := e.hasBlob(t, goodData); got != tc.kept {
			t.Errorf("sweep at +%v: blob kept = %v, want %v", tc.at, got, tc.kept)
		}
	}
}

// TestUploadChecksWholeArchive: an upload is accepted only when every
// member of its archive is safe and every compressed stream decodes to its
// end (issue 9 point 24: a .tar.bz2 with ../../evil after its info files,
// and one cut at 60 % after them, were accepted, indexed and served).
func TestUploadChecksWholeArchive(t *testing.T) { inHTTPModes(t, testUploadChecksWholeArchive) }

func testUploadChecksWholeArchive(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "whole", false, admin)
	base := filePkgSpec("whole-pkg", "1.0", "linux-64")
	base.RunExports = map[string]any{"weak": []any{"whole-pkg"}} // all info files early
	evil := base
	evil.Trailing = []condatest.Member{{Name: "../../evil", Content: "evil\n"}}
	big := base
	rnd := rand.New(rand.NewPCG(5, 6))
	payload := make([]byte, 3<<20) // several bzip2 blocks: the cut is after the info files
	for i := range payload {
		payload[i] = byte(rnd.Uint32())
	}
	big.Files = map[string]string{"share/big.bin": string(payload)}
	pkgEntry := "pkg-" + condatest.Filename(base, "") + ".tar.zst"
	cut := func(b []byte) []byte { return b[:len(b)*6/10] }
	before := e.snapshot(t, "whole", "linux-64")
	for _, tc := range []struct {
		name, ext string
		data      []byte
		detail    string
	}{
		{"escaping member after the info files", ".tar.bz2", condatest.TarBz2(t, evil), "escapes the archive root"},
		{"truncated at 60 %", ".tar.bz2", cut(condatest.TarBz2(t, big)), "truncated"},
		{"escaping member in the pkg component", ".conda", condatest.Conda(t, evil), "escapes the archive root"},
		{"pkg component truncated", ".conda", condatest.ReplaceCondaEntry(t, condatest.Conda(t, base), pkgEntry, cut), "bad archive"},
	} {
		file := condatest.Filename(base, tc.ext)
		t.Run(tc.name+" files", func(t *testing.T) {
			e.upload(t, admin, "whole", file, tc.data).wantErr(t, http.StatusBadRequest, tc.detail)
		})
		t.Run(tc.name+" upload", func(t *testing.T) {
			e.uploadRaw(t, admin, "whole", file, tc.data, sha256Hex(tc.data), false).wantErr(t, http.StatusBadRequest, tc.detail)
		})
	}
	e.unchanged(t, "whole", before)
	for _, ext := range []string{".tar.bz2", ".conda"} {
		data := condatest.TarBz2(t, base)
		if ext == ".conda" {
			data = condatest.Conda(t, base)
		}
		e.upload(t, admin, "whole", condatest.Filename(base, ext), data).want(t, http.StatusCreated)
		e.wantServed(t, "whole", "linux-64", condatest.Filename(base, ext), data)
	}
}
