package e2e

import (
	"archive/zip"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
)

// The load benchmarks run wrk against condamesh and against nginx (Debian,
// sendfile on) serving the same bytes from the same disk, in one run, and
// report both rates and their ratio. Reproduce with:
//
//	go test ./e2e -run '^$' -bench . -benchtime 1x -timeout 60m
//
// Figures and their interpretation are kept in docs/BENCHMARKS.md.

const wrkDuration = "5s"

// bigConda writes a valid .conda of about size bytes to path: real info
// files (from condatest) plus a stored pkg component of random bytes.
func bigConda(tb testing.TB, path, name string, size int64) {
	tb.Helper()
	spec := condatest.Spec{Name: name, Version: "1.0", Build: "0", Files: map[string]string{"x": "y"}}
	small := condatest.Conda(tb, spec)
	zr, err := zip.NewReader(bytes.NewReader(small), int64(len(small)))
	if err != nil {
		tb.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	zw := zip.NewWriter(f)
	stem := name + "-1.0-0"
	for _, zf := range zr.File {
		if strings.HasPrefix(zf.Name, "pkg-") {
			continue
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: zf.Name, Method: zip.Store})
		if err != nil {
			tb.Fatal(err)
		}
		rc, _ := zf.Open()
		_, _ = io.Copy(w, rc)
		rc.Close()
	}
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "pkg-" + stem + ".tar.zst", Method: zip.Store})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.CopyN(w, rand.Reader, size); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
}

var wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// wrk runs a load and returns requests per second.
func wrk(tb testing.TB, url string, conns int, header ...string) float64 {
	tb.Helper()
	args := []string{"-t2", "-c" + strconv.Itoa(conns), "-d" + wrkDuration}
	for _, h := range header {
		args = append(args, "-H", h)
	}
	out, err := exec.Command("wrk", append(args, url)...).CombinedOutput()
	if err != nil {
		tb.Fatalf("wrk %s: %v: %s", url, err, out)
	}
	if strings.Contains(string(out), "Non-2xx or 3xx responses") {
		tb.Fatalf("wrk saw errors for %s:\n%s", url, out)
	}
	m := wrkRPS.FindStringSubmatch(string(out))
	if m == nil {
		tb.Fatalf("no rate in wrk output:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func lastModified(tb testing.TB, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if lm := resp.Header.Get("Last-Modified"); lm != "" {
		return lm
	}
	tb.Fatalf("%s: no Last-Modified", url)
	return ""
}

func etagOf(tb testing.TB, url string) string {
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("ETag") == "" {
		tb.Fatalf("%s: %d, etag %q", url, resp.StatusCode, resp.Header.Get("ETag"))
	}
	return resp.Header.Get("ETag")
}

// goFileServer serves dir with the Go standard library's http.FileServer
// from this process: a second anchor that shows what Go's net/http itself
// costs next to nginx on the same machine.
func goFileServer(tb testing.TB, dir string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(dir))}
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(func() { _ = srv.Close() })
	return "http://" + l.Addr().String()
}

// compare runs the same load against nginx, the Go standard file server
// and condamesh, alternating over rounds (same connections and duration),
// and reports the mean rates and condamesh's ratios to both anchors.
func compare(b *testing.B, cmURL, ngURL, goURL string, conns int, cmHeader, ngHeader, goHeader []string) {
	const rounds = 2
	var ng, gs, cm float64
	for range rounds {
		ng += wrk(b, ngURL, conns, ngHeader...) / rounds
		gs += wrk(b, goURL, conns, goHeader...) / rounds
		cm += wrk(b, cmURL, conns, cmHeader...) / rounds
	}
	b.ReportMetric(cm, "condamesh-req/s")
	b.ReportMetric(ng, "nginx-req/s")
	b.ReportMetric(gs, "go-fileserver-req/s")
	b.ReportMetric(cm/ng, "ratio-to-nginx")
	b.ReportMetric(cm/gs, "ratio-to-go-fileserver")
}

// BenchmarkDownloadVsNginx: package downloads of 1 MiB and 100 MiB, 32
// connections, condamesh /get versus nginx serving the same file.
func BenchmarkDownloadVsNginx(b *testing.B) {
	s := startServer(b, b.TempDir())
	ng := startNginx(b)
	gs := goFileServer(b, ng.root)
	s.mustDo(201, "POST", "/api/channels", `{"name":"bench","private":false}`)
	for _, size := range []int64{1 << 20, 100 << 20} {
		name := fmt.Sprintf("pkg%dmib", size>>20)
		path := filepath.Join(b.TempDir(), name+"-1.0-0.conda")
		bigConda(b, path, name, size)
		data, err := os.ReadFile(path)
		if err != nil {
			b.Fatal(err)
		}
		code, body := s.do("POST", "/api/channels/bench/upload/"+filepath.Base(path)+"?sha256="+sha256Hex(data), adminKey, bytes.NewReader(data))
		if code != 201 {
			b.Fatalf("upload: %d %s", code, body)
		}
		ng.put(b, "bench/noarch/"+filepath.Base(path), data)
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			for range b.N {
				rel := "/bench/noarch/" + filepath.Base(path)
				compare(b, s.url+"/get"+rel, ng.url+rel, gs+rel, 32, nil, nil, nil)
			}
		})
	}
}

// BenchmarkIndexVsNginx: repodata.json.zst of a 10,000-record subdir, full
// 200 responses and 304 revalidations, versus nginx serving the same bytes.
// It also reports the time from one more upload to a fresh repodata.json
// (index regeneration of the 10,000-record subdir), against compressing the
// same repodata.json with the zstd CLI at -19.
func BenchmarkIndexVsNginx(b *testing.B) {
	s := startServer(b, b.TempDir())
	ng := startNginx(b)
	gs := goFileServer(b, ng.root)
	s.mustDo(201, "POST", "/api/channels", `{"name":"big","private":false}`)
	const records = 10000
	var wg sync.WaitGroup
	batches := make(chan map[string][]byte, 4)
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for batch := range batches {
			if code, body := s.uploadMultipart("big", batch); code != 201 {
				select {
				case errs <- fmt.Errorf("bulk upload: %d %s", code, body):
				default:
				}
			}
		}
	}()
	batch := map[string][]byte{}
	for i := range records {
		spec := condatest.Spec{Name: fmt.Sprintf("pkg%05d", i), Version: fmt.Sprintf("1.%d", i%7), Build: "h0_0", Subdir: "linux-64", Depends: []string{"python >=3.9", "libzlib >=1.3"}}
		batch[condatest.Filename(spec, ".conda")] = condatest.Conda(b, spec)
		if len(batch) == 500 {
			batches <- batch
			batch = map[string][]byte{}
		}
	}
	close(batches)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	zst := download(b, s.url+"/get/big/linux-64/repodata.json.zst")
	ng.put(b, "big/linux-64/repodata.json.zst", zst)
	rel := "/big/linux-64/repodata.json.zst"
	cmURL, ngURL, goURL := s.url+"/get"+rel, ng.url+rel, gs+rel
	b.Run("repodata.json.zst-200", func(b *testing.B) {
		for range b.N {
			compare(b, cmURL, ngURL, goURL, 32, nil, nil, nil)
		}
	})
	b.Run("repodata.json.zst-304", func(b *testing.B) {
		for range b.N {
			// http.FileServer sends no ETag: it revalidates by date.
			compare(b, cmURL, ngURL, goURL, 32, []string{"If-None-Match: " + etagOf(b, cmURL)}, []string{"If-None-Match: " + etagOf(b, ngURL)}, []string{"If-Modified-Since: " + lastModified(b, goURL)})
		}
	})
	b.Run("regenerate-after-one-upload", func(b *testing.B) {
		var took []time.Duration
		for i := range max(b.N, 5) {
			before := etagOf(b, s.url+"/get/big/linux-64/repodata.json")
			spec := condatest.Spec{Name: fmt.Sprintf("extra%03d", i), Version: "1.0", Build: "h0_0", Subdir: "linux-64"}
			data := condatest.Conda(b, spec)
			start := time.Now()
			code, body := s.do("POST", "/api/channels/big/upload/"+condatest.Filename(spec, ".conda")+"?sha256="+sha256Hex(data), adminKey, bytes.NewReader(data))
			if code != 201 {
				b.Fatalf("upload: %d %s", code, body)
			}
			// GET waits (bounded) for the indexer to publish the change.
			if etagOf(b, s.url+"/get/big/linux-64/repodata.json") == before {
				b.Fatal("repodata did not change after an upload")
			}
			took = append(took, time.Since(start))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms-upload-to-fresh-index")
		raw := download(b, s.url+"/get/big/linux-64/repodata.json")
		f := filepath.Join(b.TempDir(), "repodata.json")
		_ = os.WriteFile(f, raw, 0o644)
		start := time.Now()
		if out, err := exec.Command("zstd", "-q", "-19", "-f", "-o", f+".zst", f).CombinedOutput(); err != nil {
			b.Fatalf("zstd: %v %s", err, out)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "zstd-cli-19-ms")
		b.ReportMetric(float64(len(raw)), "repodata-bytes")
	})
}

// rssPeak returns a process's peak resident set size (VmHWM) in MiB.
func rssPeak(tb testing.TB, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		tb.Fatalf("no VmHWM in /proc/%d/status", pid)
	}
	kb, _ := strconv.Atoi(string(m[1]))
	return float64(kb) / 1024
}

// BenchmarkMemory1GiB reports the server's peak RSS while a 1 GiB package is
// uploaded, and (in a fresh process) while 32 clients download it.
func BenchmarkMemory1GiB(b *testing.B) {
	dir := b.TempDir()
	path := filepath.Join(b.TempDir(), "huge-1.0-0.conda")
	bigConda(b, path, "huge", 1<<30)
	sum := fileSHA256(b, path)
	s := startServer(b, dir)
	s.mustDo(201, "POST", "/api/channels", `{"name":"mem","private":false}`)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	st, _ := f.Stat()
	req, _ := http.NewRequest("POST", s.url+"/api/channels/mem/upload/huge-1.0-0.conda?sha256="+sum, f)
	req.ContentLength = st.Size()
	req.Header.Set("X-API-Key", adminKey)
	resp, err := http.DefaultClient.Do(req)
	f.Close()
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("upload 1 GiB: %v %v", err, resp)
	}
	resp.Body.Close()
	b.ReportMetric(rssPeak(b, s.cmd.Process.Pid), "peak-RSS-MiB-upload")
	s.stop()
	s = startServer(b, dir)
	_ = wrk(b, s.url+"/get/mem/noarch/huge-1.0-0.conda", 32)
	b.ReportMetric(rssPeak(b, s.cmd.Process.Pid), "peak-RSS-MiB-32-downloads")
}

func fileSHA256(tb testing.TB, path string) string {
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
