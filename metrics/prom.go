package metrics

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/conda"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
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

// Handler serves the text exposition. For requests full rejects, the
// series of channels private reports (a channel label) are summed under
// one series labelled PrivateChannel, so their names and traffic stay
// hidden; full nil serves everything to everyone.
func (p *Prom) Handler(full func(*http.Request) bool, private func(ctx context.Context, channel string) bool) http.Handler {
	all := promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{})
	if full == nil {
		return all
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if full(r) {
			all.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		promhttp.HandlerFor(prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
			mfs, err := p.reg.Gather()
			for _, mf := range mfs {
				hidePrivate(mf, func(ch string) bool { return private(ctx, ch) })
			}
			return mfs, err
		}), promhttp.HandlerOpts{}).ServeHTTP(w, r)
	})
}

// hidePrivate relabels the series of private channels in mf and sums those
// that end up with equal labels (counters and gauges; other series of a
// private channel are dropped).
func hidePrivate(mf *dto.MetricFamily, private func(string) bool) {
	var out []*dto.Metric
	merged := map[string]*dto.Metric{}
	for _, m := range mf.Metric {
		hidden := false
		for i, l := range m.Label {
			if l.GetName() == "channel" && private(l.GetValue()) {
				// A copy: gathered label pairs are the collectors' own.
				labels := append([]*dto.LabelPair(nil), m.Label...)
				labels[i] = &dto.LabelPair{Name: l.Name, Value: proto.String(PrivateChannel)}
				m = &dto.Metric{Label: labels, Counter: m.Counter, Gauge: m.Gauge}
				hidden = true
				break
			}
		}
		if !hidden {
			out = append(out, m)
			continue
		}
		if m.Counter == nil && m.Gauge == nil {
			continue
		}
		var key strings.Builder
		for _, l := range m.Label {
			key.WriteString(l.GetName() + "\x00" + l.GetValue() + "\x00")
		}
		sum, ok := merged[key.String()]
		switch {
		case !ok:
			sum = &dto.Metric{Label: m.Label}
			if m.Counter != nil {
				sum.Counter = &dto.Counter{Value: proto.Float64(m.Counter.GetValue())}
			} else {
				sum.Gauge = &dto.Gauge{Value: proto.Float64(m.Gauge.GetValue())}
			}
			merged[key.String()] = sum
			out = append(out, sum)
		case m.Counter != nil && sum.Counter != nil:
			sum.Counter.Value = proto.Float64(sum.Counter.GetValue() + m.Counter.GetValue())
		case m.Gauge != nil && sum.Gauge != nil:
			sum.Gauge.Value = proto.Float64(sum.Gauge.GetValue() + m.Gauge.GetValue())
		}
	}
	mf.Metric = out
}

// ProxyRequest counts one proxy answer: hit, miss or stale.
func (p *Prom) ProxyRequest(result string) {
	child(&p.proxyResults, result, func() prometheus.Counter { return p.ProxyRequests.WithLabelValues(result) }).Inc()
}

// OtherPlatform is the platform label of downloads from subdirs conda does
// not know: clients choose paths, so the label set stays bounded.
const OtherPlatform = "other"

// PrivateChannel is the channel label that private channels' series are
// summed under for scrapers without the scrape token. Channel names cannot
// contain "_", so no channel has it.
const PrivateChannel = "_private"

// Download counts one package download. platform is kept only if conda
// knows it (else OtherPlatform).
func (p *Prom) Download(channel, platform string) {
	if !conda.KnownSubdir(platform) {
		platform = OtherPlatform
	}
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
