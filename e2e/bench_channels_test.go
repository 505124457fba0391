package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
)

// BenchmarkMirrorSync mirrors a 10,000-file channel from a local nginx and
// compares with curl fetching the same files from the same upstream with
// the same parallelism (8): the physical limit here. It also times a
// re-sync with nothing changed (only index requests).
func BenchmarkMirrorSync(b *testing.B) {
	ng := startNginxLogged(b, true)
	up := newUpstreamChannel(b, filepath.Join(ng.root, "chan"), 6000) // 2,000 noarch + 2 x 4,000 = 10,000 files
	var total int64
	var urls []string
	for p, data := range up.files {
		total += int64(len(data))
		urls = append(urls, ng.url+"/chan/"+p)
	}
	sort.Strings(urls)
	list := filepath.Join(b.TempDir(), "urls.txt")
	cfg := ""
	for _, u := range urls {
		cfg += "url = \"" + u + "\"\noutput = \"/dev/null\"\n"
	}
	if err := os.WriteFile(list, []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Run("10000-files", func(b *testing.B) {
		// Figures are over all b.N rounds (sums, so a ratio is of total
		// times); each round is logged too, since one round is noisy here.
		var curlSum, syncSum, resyncSum time.Duration
		var rssMax float64
		for i := range b.N {
			start := time.Now()
			out, err := exec.Command("curl", "--silent", "--fail", "--parallel", "--parallel-max", "8", "--config", list).CombinedOutput()
			if err != nil {
				b.Fatalf("curl: %v %s", err, out)
			}
			curlTime := time.Since(start)

			s := startServer(b, b.TempDir())
			start = time.Now()
			s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"m","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"mirror"}`, ng.url))
			id := s.latestJob("synchronize_repodata").ID
			// Poll closely: waitJob's 20 ms steps would be a good part of
			// what is measured.
			for {
				var j jobJSON
				decodeJSON(b, s.mustDo(200, "GET", fmt.Sprintf("/api/jobs/%d", id), ""), &j)
				if j.Status == "success" || j.Status == "failed" || time.Since(start) > 20*time.Minute {
					break
				}
				time.Sleep(time.Millisecond)
			}
			syncTime := time.Since(start)
			task := s.waitJob(id, time.Minute)
			if task.Progress == nil || task.Progress.FilesDone != int64(len(up.files)) || len(task.Progress.Errors) != 0 {
				b.Fatalf("sync: %+v", task.Progress)
			}
			start = time.Now()
			var j jobJSON
			decodeJSON(b, s.mustDo(200, "PUT", "/api/channels/m/actions", `{"action":"synchronize_repodata"}`), &j)
			s.waitJob(j.ID, time.Minute)
			resync := time.Since(start)
			rss := rssPeak(b, s.cmd.Process.Pid)
			s.stop()
			b.Logf("round %d: curl %v, sync %v (%.2fx), no-change re-sync %v, server peak RSS %.0f MiB", i+1, curlTime.Round(time.Millisecond), syncTime.Round(time.Millisecond),
				curlTime.Seconds()/syncTime.Seconds(), resync.Round(time.Millisecond), rss)
			rssMax = max(rssMax, rss)
			curlSum += curlTime
			syncSum += syncTime
			resyncSum += resync
		}
		files, n := float64(len(up.files)), float64(b.N)
		b.ReportMetric(files*n/syncSum.Seconds(), "condamesh-files/s")
		b.ReportMetric(files*n/curlSum.Seconds(), "curl-files/s")
		b.ReportMetric(float64(total)*n/1e6/syncSum.Seconds(), "condamesh-MB/s")
		b.ReportMetric(curlSum.Seconds()/syncSum.Seconds(), "ratio-to-curl")
		b.ReportMetric(float64(resyncSum.Milliseconds())/n, "no-change-resync-ms")
		b.ReportMetric(rssMax, "peak-RSS-MiB")
	})
}

// BenchmarkProxy: a hot hit (cached package) against nginx serving the
// upstream file, and the time to first byte of cold misses against the
// upstream's own.
func BenchmarkProxy(b *testing.B) {
	ng := startNginx(b)
	up := newUpstreamChannel(b, filepath.Join(ng.root, "chan"), 400)
	s := startServer(b, b.TempDir())
	gs := goFileServer(b, ng.root)
	s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"p","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, ng.url))
	var paths []string
	for p := range up.files {
		if strings.HasPrefix(p, "linux-64/") {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	big := "linux-64/big-1.0-0.conda" // a 1 MiB package, a typical size
	bigPath := filepath.Join(b.TempDir(), "big-1.0-0.conda")
	bigConda(b, bigPath, "big", 1<<20)
	bigData, err := os.ReadFile(bigPath)
	if err != nil {
		b.Fatal(err)
	}
	up.put(b, "linux-64", "big-1.0-0.conda", bigData) // listed: a proxy serves only what the index lists
	up.write(b)
	for name, hot := range map[string]string{"hot-hit-1MiB": big, "hot-hit-small": paths[0]} {
		download(b, s.url+"/get/p/"+hot)
		b.Run(name, func(b *testing.B) {
			for range b.N {
				compare(b, s.url+"/get/p/"+hot, ng.url+"/chan/"+hot, gs+"/chan/"+hot, 32, nil, nil, nil)
			}
		})
	}
	b.Run("cold-miss-ttfb", func(b *testing.B) {
		ttfb := func(url string) float64 {
			out, err := exec.Command("curl", "--silent", "--fail", "-o", "/dev/null", "-w", "%{time_starttransfer}", url).Output()
			if err != nil {
				b.Fatalf("curl %s: %v", url, err)
			}
			v, _ := strconv.ParseFloat(string(out), 64)
			return v
		}
		download(b, s.url+"/get/p/linux-64/repodata.json") // clients fetch the index first
		var cold, direct []float64
		for _, p := range paths[1:101] {
			direct = append(direct, ttfb(ng.url+"/chan/"+p))
			cold = append(cold, ttfb(s.url+"/get/p/"+p))
		}
		sort.Float64s(cold)
		sort.Float64s(direct)
		b.ReportMetric(cold[len(cold)/2]*1000, "median-cold-ttfb-ms")
		b.ReportMetric(direct[len(direct)/2]*1000, "median-upstream-ttfb-ms")
		b.ReportMetric((cold[len(cold)/2]-direct[len(direct)/2])*1000, "median-added-ms")
	})
	// A large package is streamed to the client that missed it while the
	// proxy downloads and verifies it: the first byte does not wait for the
	// whole file.
	b.Run("cold-miss-ttfb-100MiB", func(b *testing.B) {
		huge := filepath.Join(b.TempDir(), "huge-1.0-0.conda")
		bigConda(b, huge, "huge", 100<<20)
		data, err := os.ReadFile(huge)
		if err != nil {
			b.Fatal(err)
		}
		up.put(b, "linux-64", "huge-1.0-0.conda", data)
		up.write(b)
		for i := range b.N {
			name := fmt.Sprintf("big%d", i) // a fresh proxy channel: a cold cache every time
			s.mustDo(201, "POST", "/api/channels", fmt.Sprintf(`{"name":"%s","private":false,"mirror_channel_url":"%s/chan","mirror_mode":"proxy"}`, name, ng.url))
			download(b, s.url+"/get/"+name+"/linux-64/repodata.json")
			timing := func(url string) (ttfb, total float64) {
				out, err := exec.Command("curl", "--silent", "--fail", "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total}", url).Output()
				if err != nil {
					b.Fatalf("curl %s: %v", url, err)
				}
				if _, err := fmt.Sscan(string(out), &ttfb, &total); err != nil {
					b.Fatalf("curl timing %q: %v", out, err)
				}
				return ttfb, total
			}
			upTTFB, upTotal := timing(ng.url + "/chan/linux-64/huge-1.0-0.conda")
			ttfb, total := timing(s.url + "/get/" + name + "/linux-64/huge-1.0-0.conda")
			b.ReportMetric(ttfb*1000, "cold-ttfb-ms")
			b.ReportMetric(total*1000, "cold-total-ms")
			b.ReportMetric(upTTFB*1000, "upstream-ttfb-ms")
			b.ReportMetric(upTotal*1000, "upstream-total-ms")
		}
	})
}

// BenchmarkDownloadCounting: package download rate with download counting
// on and off (two servers, same files, same run; target >= 0.95x).
func BenchmarkDownloadCounting(b *testing.B) {
	on := startServer(b, b.TempDir())
	off := startServerArgs(b, b.TempDir(), "--count-downloads=false")
	path := filepath.Join(b.TempDir(), "pkg1mib-1.0-0.conda")
	bigConda(b, path, "pkg1mib", 1<<20)
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	small := condatest.Conda(b, condatest.Spec{Name: "small", Version: "1", Build: "0"})
	for _, s := range []*server{on, off} {
		s.mustDo(201, "POST", "/api/channels", `{"name":"c","private":false}`)
		if code, body := s.uploadMultipart("c", map[string][]byte{filepath.Base(path): data, "small-1-0.conda": small}); code != 201 {
			b.Fatalf("upload: %d %s", code, body)
		}
	}
	for size, file := range map[string]string{"1MiB": filepath.Base(path), "small": "small-1-0.conda"} {
		b.Run(size, func(b *testing.B) {
			for range b.N {
				var onRate, offRate float64
				for range 2 {
					offRate += wrk(b, off.url+"/get/c/noarch/"+file, 32) / 2
					onRate += wrk(b, on.url+"/get/c/noarch/"+file, 32) / 2
				}
				b.ReportMetric(onRate, "counting-on-req/s")
				b.ReportMetric(offRate, "counting-off-req/s")
				b.ReportMetric(onRate/offRate, "ratio")
			}
		})
	}
}
