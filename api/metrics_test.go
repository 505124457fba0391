package api_test

import (
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node"
)

type series []struct {
	Timestamp string `json:"timestamp"`
	Count     int64  `json:"count"`
}

// TestDownloadMetrics covers quetz-api.md §10 cases 65 and 68-72 with a
// controllable clock, plus the fixes: HEAD and 404 are not counted, private
// channels' metrics need read permission, unknown channels are 404.
func TestDownloadMetrics(t *testing.T) { inHTTPModes(t, testDownloadMetrics) }

func testDownloadMetrics(t *testing.T, mode ...nodetest.Option) {
	var clock atomic.Int64
	clock.Store(time.Date(2020, 1, 5, 21, 1, 0, 0, time.UTC).Unix())
	e := startIn(t, mode, func(c *node.Config) {
		c.API.Now = func() time.Time { return time.Unix(clock.Load(), 0).UTC() }
		c.DownloadFlush = 10 * time.Millisecond
	})
	e.newChannel(t, "met", false, admin)
	var files []string
	for _, v := range []string{"0.1", "0.2", "0.3"} {
		spec := condatest.Spec{Name: "test-package", Version: v, Build: "0", Subdir: "linux-64"}
		fn := condatest.Filename(spec, ".tar.bz2")
		e.upload(t, admin, "met", fn, condatest.TarBz2(t, spec)).want(t, 201)
		files = append(files, fn)
	}
	file := "/get/met/linux-64/" + files[0]
	for _, at := range []time.Time{
		time.Date(2020, 1, 5, 21, 1, 0, 0, time.UTC),
		time.Date(2020, 1, 6, 22, 10, 0, 0, time.UTC),
		time.Date(2020, 2, 18, 10, 10, 0, 0, time.UTC),
	} {
		clock.Store(at.Unix())
		e.get(t, file, "").want(t, 200)
		e.do(t, "HEAD", file, "", nil, nil).want(t, 200)                // not counted
		e.get(t, "/get/met/linux-64/nope-1-0.tar.bz2", "").want(t, 404) // not counted
	}
	vm := "/metrics/channels/met/packages/test-package/versions/linux-64/" + files[0]
	type versionMetrics struct {
		Period     string `json:"period"`
		MetricName string `json:"metric_name"`
		Total      int64  `json:"total"`
		Series     series `json:"series"`
	}
	get := func(q string) versionMetrics {
		var m versionMetrics
		e.get(t, vm+q, "").want(t, 200).decode(t, &m)
		return m
	}
	deadline := time.Now().Add(10 * time.Second)
	for get("").Total != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("downloads not counted: %+v", get(""))
		}
		time.Sleep(10 * time.Millisecond)
	}
	m := get("")
	if m.Period != "D" || m.MetricName != "download" || fmt.Sprint(m.Series) != "[{2020-01-05T00:00:00 1} {2020-01-06T00:00:00 1} {2020-02-18T00:00:00 1}]" {
		t.Fatalf("case 68: %+v", m)
	}
	if m := get("?start=2020-01-05T10:00"); m.Total != 2 {
		t.Fatalf("case 69: %+v", m)
	}
	if m := get("?start=2020-01-05T20:00&end=2020-01-05T22:00&period=H&fill_zeros=true"); m.Total != 1 ||
		fmt.Sprint(m.Series) != "[{2020-01-05T20:00:00 0} {2020-01-05T21:00:00 1} {2020-01-05T22:00:00 0}]" {
		t.Fatalf("case 70: %+v", m)
	}
	if m := get("?period=M"); m.Total != 3 || fmt.Sprint(m.Series) != "[{2020-01-01T00:00:00 2} {2020-02-01T00:00:00 1}]" {
		t.Fatalf("case 71: %+v", m)
	}
	e.get(t, vm+"?period=W", "").want(t, 422)
	var ver map[string]any
	e.get(t, "/api/channels/met/packages/test-package/versions/linux-64/"+files[0], "").want(t, 200).decode(t, &ver)
	if ver["download_count"] != float64(3) {
		t.Fatalf("case 65: download_count %v", ver["download_count"])
	}

	// Case 72: one download of each version today.
	today := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	clock.Store(today.Unix())
	for _, fn := range files {
		e.get(t, "/get/met/linux-64/"+fn, "").want(t, 200)
	}
	var cm struct {
		Period   string                       `json:"period"`
		Packages map[string]map[string]series `json:"packages"`
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		e.get(t, "/metrics/channels/met?start=2026-11-25T00:00", "").want(t, 200).decode(t, &cm)
		if len(cm.Packages) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("case 72: %+v", cm)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, fn := range files {
		if got := fmt.Sprint(cm.Packages["linux-64/"+fn]["series"]); got != "[{2026-11-25T00:00:00 1}]" || cm.Period != "D" {
			t.Fatalf("case 72: %s: %s", fn, got)
		}
	}

	// Private channels need read permission; unknown channels are 404.
	e.newChannel(t, "secret-met", true, admin)
	e.get(t, "/metrics/channels/secret-met", "").want(t, http.StatusUnauthorized)
	e.get(t, "/metrics/channels/secret-met", admin).want(t, http.StatusOK)
	e.get(t, "/metrics/channels/no-such-channel", admin).want(t, http.StatusNotFound)
}

// TestPrometheus checks the exposition at Quetz's /metricsp and at
// /metrics: requests by route template, downloads, bytes served, store size.
func TestPrometheus(t *testing.T) { inHTTPModes(t, testPrometheus) }

func testPrometheus(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "prom", false, admin)
	spec := condatest.Spec{Name: "p", Version: "1", Build: "0", Subdir: "linux-64"}
	fn := condatest.Filename(spec, ".conda")
	e.upload(t, admin, "prom", fn, condatest.Conda(t, spec)).want(t, 201)
	body := e.get(t, "/get/prom/linux-64/"+fn, "").want(t, 200).body
	for _, path := range []string{"/metricsp", "/metrics"} {
		text := string(e.get(t, path, "").want(t, 200).body)
		for _, want := range []string{
			`condamesh_http_requests_total{method="GET",route="GET /get/{channel}/{path...}",status="200"}`,
			`condamesh_http_requests_total{method="POST",route="POST /api/channels",status="201"}`,
			`condamesh_downloads_total{channel="prom",platform="linux-64"} 1`,
			`condamesh_http_request_duration_seconds_bucket{method="GET",route="GET /get/{channel}/{path...}"`,
			`condamesh_store_bytes`,
			`condamesh_served_bytes_total`,
		} {
			if !strings.Contains(text, want) {
				t.Fatalf("%s lacks %q", path, want)
			}
		}
		if !strings.Contains(text, fmt.Sprintf("condamesh_served_bytes_total %d\n", len(body))) {
			t.Fatalf("%s: bytes served not reported", path)
		}
	}
}
