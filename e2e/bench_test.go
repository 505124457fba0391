package e2e

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/bzip2"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/klauspost/compress/zstd"
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
// files (from condatest) plus a pkg component whose tar holds 1 MiB files,
// each half random bytes and half generated text, zstd-compressed (level
// 3, as conda-package-handling's default is higher but decodes alike), so
// that checking the package decompresses and walks real data (about 1.6x
// size bytes unpacked).
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
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(bw)
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
	cw := &countingWriter{w: w}
	enc, err := zstd.NewWriter(cw, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		tb.Fatal(err)
	}
	tw := tar.NewWriter(enc)
	writePayload(tb, tw, name, size, func() int64 { return cw.n })
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// writePayload writes 1 MiB files, each half random bytes and half
// generated text, into tw until written() reaches size.
func writePayload(tb testing.TB, tw *tar.Writer, name string, size int64, written func() int64) {
	tb.Helper()
	file := make([]byte, 1<<20)
	words := strings.Fields("lib bin share include python site packages conda mirror channel index json repodata " +
		"version build number depends license about summary shared object symbol table section header")
	rnd := mrand.New(mrand.NewPCG(uint64(size), 7))
	for i := 0; written() < size; i++ {
		half := len(file) / 2
		for j := 0; j < half; j += 8 {
			binary.LittleEndian.PutUint64(file[j:], rnd.Uint64())
		}
		text := file[half:half]
		for len(text) < half {
			text = append(text, words[rnd.IntN(len(words))]...)
			text = append(text, ' ')
		}
		copy(file[half:], text[:half])
		hdr := &tar.Header{Name: fmt.Sprintf("share/%s/f%05d.bin", name, i), Mode: 0o644, Size: int64(len(file)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write(file); err != nil {
			tb.Fatal(err)
		}
	}
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
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
func rssPeak(tb testing.TB, pid int) float64 { return procKiB(tb, pid, "VmHWM") / 1024 }

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

// BenchmarkUpload1GiB times uploads through the raw upload route (the
// server hashes, stores and checks the whole archive before it answers
// 201) of a 1 GiB .conda and a 1 GiB .tar.bz2 against `sha256sum` of the
// same file in the same run, before and after the upload. The .tar.bz2 is
// also timed against the physical references for decoding it, in the same
// run: `bzip2 -t` (libbzip2, one core) and `lbzip2 -t` on every CPU (see
// docs/BENCHMARKS.md).
func BenchmarkUpload1GiB(b *testing.B) {
	dir := b.TempDir()
	s := startServer(b, b.TempDir())
	s.mustDo(201, "POST", "/api/channels", `{"name":"up","private":false}`)
	conda := filepath.Join(dir, "huge-1.0-0.conda")
	bigConda(b, conda, "huge", 1<<30)
	bz2 := filepath.Join(dir, "hugebz-1.0-0.tar.bz2")
	bigTarBz2(b, bz2, "hugebz", 1<<30)
	cpus := strconv.Itoa(runtime.NumCPU())
	for _, path := range []string{conda, bz2} {
		format := "conda"
		if strings.HasSuffix(path, ".tar.bz2") {
			format = "tar.bz2"
		}
		b.Run(format, func(b *testing.B) {
			sum := fileSHA256(b, path)
			for range b.N {
				ref := timeCmd(b, "sha256sum", path)
				up := timeUpload(b, s, "up", path, sum)
				ref = (ref + timeCmd(b, "sha256sum", path)) / 2
				b.ReportMetric(up.Seconds(), "upload-s")
				b.ReportMetric(ref.Seconds(), "sha256sum-s")
				b.ReportMetric(ref.Seconds()/up.Seconds(), "x-sha256sum")
				if format != "tar.bz2" {
					continue
				}
				bz := timeCmd(b, "bzip2", "-t", path)
				lb := timeCmd(b, "lbzip2", "-t", "-n", cpus, path)
				b.ReportMetric(bz.Seconds(), "bzip2-t-s")
				b.ReportMetric(bz.Seconds()/up.Seconds(), "x-bzip2-t")
				b.ReportMetric(lb.Seconds(), "lbzip2-t-s")
				b.ReportMetric(lb.Seconds()/up.Seconds(), "x-lbzip2-t")
			}
		})
	}
}

// timeCmd runs a command and returns its wall time.
func timeCmd(tb testing.TB, name string, args ...string) time.Duration {
	tb.Helper()
	start := time.Now()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		tb.Fatalf("%s: %v: %s", name, err, out)
	}
	return time.Since(start)
}

// timeUpload uploads the file at path (force=true, so it may repeat)
// through the raw upload route and returns the time to the 201.
func timeUpload(tb testing.TB, s *server, channel, path, sum string) time.Duration {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	req, _ := http.NewRequest("POST", s.url+"/api/channels/"+channel+"/upload/"+filepath.Base(path)+"?force=true&sha256="+sum, f)
	req.ContentLength = st.Size()
	req.Header.Set("X-API-Key", adminKey)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if resp.StatusCode != 201 {
		tb.Fatalf("upload %s: %d %s", path, resp.StatusCode, body)
	}
	return d
}

// bigTarBz2 writes a valid .tar.bz2 of about size compressed bytes to
// path, with the payload bigConda uses, compressed at level 9 by lbzip2
// (on every CPU; its output is one bzip2 stream, as the bzip2 CLI's).
func bigTarBz2(tb testing.TB, path, name string, size int64) {
	tb.Helper()
	spec := condatest.Spec{Name: name, Version: "1.0", Build: "0", Files: map[string]string{"x": "y"}}
	small := condatest.TarBz2(tb, spec)
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := &countingWriter{w: f}
	var mu sync.Mutex // lbzip2's output is copied on a goroutine of exec
	cmd := exec.Command("lbzip2", "-9", "-n", strconv.Itoa(runtime.NumCPU()))
	cmd.Stdout = writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return out.Write(p)
	})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	bw := bufio.NewWriterSize(stdin, 1<<20)
	tw := tar.NewWriter(bw)
	info := tar.NewReader(bzip2.NewReader(bytes.NewReader(small)))
	for {
		hdr, err := info.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			tb.Fatal(err)
		}
		if _, err := io.Copy(tw, info); err != nil {
			tb.Fatal(err)
		}
	}
	// The compressed count lags what is in lbzip2's pipeline: the file
	// ends up a few MB over size.
	writePayload(tb, tw, name, size, func() int64 { mu.Lock(); defer mu.Unlock(); return out.n })
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := stdin.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		tb.Fatalf("lbzip2: %v", err)
	}
}

// writerFunc is a function as an io.Writer.
type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

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
