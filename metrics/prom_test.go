package metrics_test

import (
	"testing"
	"time"

	"github.com/condamesh/condamesh/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPromCachedChildren: the cached labelled children count into the
// same series as direct lookups, and client-chosen methods cannot grow the
// label set without bound.
func TestPromCachedChildren(t *testing.T) {
	p := metrics.NewProm(nil)
	for range 3 {
		p.ObserveRequest("GET", "GET /get/{channel}/{path...}", 304, time.Millisecond)
	}
	p.ObserveRequest("GET", "GET /get/{channel}/{path...}", 200, time.Millisecond)
	for _, m := range []string{"BREW", "PROPFIND", "X-ANYTHING"} {
		p.ObserveRequest(m, "unmatched", 405, time.Millisecond)
	}
	if got := testutil.ToFloat64(p.Requests.WithLabelValues("GET", "GET /get/{channel}/{path...}", "304")); got != 3 {
		t.Errorf("304s counted %v, want 3", got)
	}
	if got := testutil.ToFloat64(p.Requests.WithLabelValues("other", "unmatched", "405")); got != 3 {
		t.Errorf("unknown methods counted %v under \"other\", want 3", got)
	}
	if n := testutil.CollectAndCount(p.Requests); n != 3 {
		t.Errorf("%d request series, want 3 (304, 200, other)", n)
	}
	p.ProxyRequest("hit")
	p.ProxyRequest("hit")
	p.Download("c", "linux-64")
	if testutil.ToFloat64(p.ProxyRequests.WithLabelValues("hit")) != 2 || testutil.ToFloat64(p.Downloads.WithLabelValues("c", "linux-64")) != 1 {
		t.Error("cached proxy or download counters do not add up")
	}
}
