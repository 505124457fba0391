package metrics

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Prom holds one node's Prometheus metrics (its own registry: no globals).
type Prom struct {
	reg            *prometheus.Registry
	Requests       *prometheus.CounterVec   // method, route, status
	Latency        *prometheus.HistogramVec // method, route
	InFlight       prometheus.Gauge
	Downloads      *prometheus.CounterVec // channel, platform
	BytesServed    prometheus.Counter
	ProxyRequests  *prometheus.CounterVec // result: hit, miss, stale
	Upstream       *prometheus.CounterVec // outcome: ok, not_modified, not_found, error
	SyncFiles      *prometheus.GaugeVec   // channel, state: done, total, errors
	storeMu        sync.Mutex
	storeBytes     float64
	storeBlobs     float64
	storeMeasured  time.Time
	storeSizeEvery time.Duration
	// Labelled children, cached (see child).
	observers    sync.Map // requestKey -> requestObservers
	proxyResults sync.Map // result -> prometheus.Counter
	downloads    sync.Map // [channel, platform] -> prometheus.Counter
}

type requestKey struct {
	method, route string
	status        int
}

type requestObservers struct {
	count   prometheus.Counter
	latency prometheus.Observer
}

// StoreSizer reports the store's size (blobs and bytes).
type StoreSizer func(ctx context.Context) (blobs, bytes int64, err error)

// NewProm registers the node's metrics. size is sampled at most every
// minute, on scrape.
func NewProm(size StoreSizer) *Prom {
	p := &Prom{
		reg: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "condamesh_http_requests_total",
			Help: "HTTP requests by method, route template and status."}, []string{"method", "route", "status"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "condamesh_http_request_duration_seconds",
			Help: "HTTP request latency by method and route template.", Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"method", "route"}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "condamesh_http_requests_in_flight", Help: "HTTP requests being served."}),
		Downloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "condamesh_downloads_total",
			Help: "Package downloads (GETs answered 2xx/3xx) by channel and platform."}, []string{"channel", "platform"}),
		BytesServed: prometheus.NewCounter(prometheus.CounterOpts{Name: "condamesh_served_bytes_total", Help: "Bytes of files served under /get (full responses)."}),
		ProxyRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "condamesh_proxy_requests_total",
			Help: "Proxy channel requests by cache result."}, []string{"result"}),
		Upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "condamesh_upstream_requests_total",
			Help: "Requests to upstream channels by outcome."}, []string{"outcome"}),
		SyncFiles: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "condamesh_mirror_sync_files",
			Help: "Progress of the running or last mirror synchronisation by channel."}, []string{"channel", "state"}),
		storeSizeEvery: time.Minute,
	}
	sample := func() (float64, float64) {
		p.storeMu.Lock()
		defer p.storeMu.Unlock()
		if size != nil && time.Since(p.storeMeasured) > p.storeSizeEvery {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if b, n, err := size(ctx); err == nil {
				p.storeBlobs, p.storeBytes, p.storeMeasured = float64(b), float64(n), time.Now()
			}
			cancel()
		}
		return p.storeBlobs, p.storeBytes
	}
	p.reg.MustRegister(p.Requests, p.Latency, p.InFlight, p.Downloads, p.BytesServed, p.ProxyRequests, p.Upstream, p.SyncFiles,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "condamesh_store_blobs", Help: "Blobs in the store (sampled at most every minute)."},
			func() float64 { b, _ := sample(); return b }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "condamesh_store_bytes", Help: "Bytes of blobs in the store (sampled at most every minute)."},
			func() float64 { _, n := sample(); return n }),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return p
}

// Handler serves the text exposition.
func (p *Prom) Handler() http.Handler {
	return promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{})
}

// ProxyRequest counts one proxy answer: hit, miss or stale.
func (p *Prom) ProxyRequest(result string) {
	child(&p.proxyResults, result, func() prometheus.Counter { return p.ProxyRequests.WithLabelValues(result) }).Inc()
}

// Download counts one package download.
func (p *Prom) Download(channel, platform string) {
	child(&p.downloads, [2]string{channel, platform}, func() prometheus.Counter { return p.Downloads.WithLabelValues(channel, platform) }).Inc()
}

// child returns the labelled metric cached under k, creating it once.
// Looking a child up by label values hashes them on every call, which
// costs more than serving a 304; the caches are bounded by the label sets.
func child[K comparable, M any](cache *sync.Map, k K, create func() M) M {
	if m, ok := cache.Load(k); ok {
		return m.(M)
	}
	m, _ := cache.LoadOrStore(k, create())
	return m.(M)
}

// ObserveRequest records one finished HTTP request.
func (p *Prom) ObserveRequest(method, route string, status int, took time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other" // clients choose methods: keep the label set bounded
	}
	ro := child(&p.observers, requestKey{method, route, status}, func() requestObservers {
		return requestObservers{
			count:   p.Requests.WithLabelValues(method, route, strconv.Itoa(status)),
			latency: p.Latency.WithLabelValues(method, route),
		}
	})
	ro.count.Inc()
	ro.latency.Observe(took.Seconds())
}
