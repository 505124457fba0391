package api

import (
	"net/http"
	"sort"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// Downloads counts package downloads.
type Downloads interface {
	Count(channel, platform, filename string, t time.Time)
}

// countDownload records a GET of a package file that is answered 2xx/3xx
// (Quetz counted HEADs and 404s too: fixed). A path whose directory cannot
// be a subdir (a proxylist redirect answers any path) is not counted.
func (s *Server) countDownload(r *http.Request, ch *v1.Channel, platform, filename string) {
	if r.Method != http.MethodGet || !conda.ValidSubdir(platform) {
		return
	}
	if s.downloads != nil {
		s.downloads.Count(ch.Name, platform, filename, s.cfg.Now())
	}
	if s.prom != nil {
		s.prom.Download(ch.Name, platform)
	}
}

type point struct {
	Timestamp string `json:"timestamp"`
	Count     int64  `json:"count"`
}

// metricsQuery is the common query of the two metrics endpoints.
type metricsQuery struct {
	period, metric, platform string
	start, end               *time.Time
	fillZeros                bool
}

func parseMetricsQuery(r *http.Request) (metricsQuery, error) {
	q := metricsQuery{period: r.URL.Query().Get("period"), metric: r.URL.Query().Get("metric_name"), platform: r.URL.Query().Get("platform")}
	if q.period == "" {
		q.period = "D"
	}
	if q.metric == "" {
		q.metric = "download"
	}
	switch q.period {
	case "H", "D", "M", "Y":
	default:
		return q, validation([]any{"query", "period"}, "enum", "Input should be 'H', 'D', 'M' or 'Y'", q.period)
	}
	for name, dst := range map[string]**time.Time{"start": &q.start, "end": &q.end} {
		if v := r.URL.Query().Get(name); v != "" {
			t, err := parseNaive(v)
			if err != nil {
				return q, validation([]any{"query", name}, "datetime_parsing", "Input should be a valid datetime", v)
			}
			*dst = &t
		}
	}
	var err error
	q.fillZeros, err = queryBool(r, "fill_zeros", false)
	return q, err
}

// series returns the buckets of one file (platform/filename) or of all
// files (key "platform/filename") within [start, end).
func (s *Server) series(r *http.Request, ch *v1.Channel, q metricsQuery, only string) (map[string][]point, error) {
	out := map[string][]point{}
	if q.metric != "download" {
		return out, nil
	}
	err := s.cat.Downloads(r.Context(), ch.Name, q.period, func(bucket int64, platform, filename string, count int64) error {
		t := time.Unix(bucket, 0).UTC()
		key := platform + "/" + filename
		if (q.start != nil && t.Before(*q.start)) || (q.end != nil && !t.Before(*q.end)) ||
			(q.platform != "" && platform != q.platform) || (only != "" && key != only) {
			return nil
		}
		out[key] = append(out[key], point{Timestamp: naiveTime(t), Count: count})
		return nil
	})
	return out, err
}

func naiveTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05") }

// fill inserts zero buckets from the start bucket to the end bucket
// (inclusive, as Quetz); missing bounds default to the first and last data
// points, and with neither data nor bounds the series stays empty (Quetz
// answered 500).
func fill(pts []point, q metricsQuery) []point {
	have := map[string]int64{}
	for _, p := range pts {
		have[p.Timestamp] = p.Count
	}
	var from, to time.Time
	switch {
	case q.start != nil:
		from = catalog.PeriodStart(q.period, *q.start)
	case len(pts) > 0:
		from, _ = parseNaive(pts[0].Timestamp)
	default:
		return pts
	}
	switch {
	case q.end != nil:
		to = catalog.PeriodStart(q.period, *q.end)
	case len(pts) > 0:
		to, _ = parseNaive(pts[len(pts)-1].Timestamp)
	default:
		to = from
	}
	var out []point
	for t := from; !t.After(to) && len(out) < 100000; t = nextPeriod(q.period, t) {
		out = append(out, point{Timestamp: naiveTime(t), Count: have[naiveTime(t)]})
	}
	return out
}

func nextPeriod(period string, t time.Time) time.Time {
	switch period {
	case "H":
		return t.Add(time.Hour)
	case "D":
		return t.AddDate(0, 0, 1)
	case "M":
		return t.AddDate(0, 1, 0)
	}
	return t.AddDate(1, 0, 0)
}

func sortPoints(pts []point) {
	sort.Slice(pts, func(i, j int) bool { return pts[i].Timestamp < pts[j].Timestamp })
}

// restChannelMetrics is GET /metrics/channels/{channel}. Unlike Quetz it
// checks the channel exists and, for private channels, read permission.
func (s *Server) restChannelMetrics(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ch, err := s.channelFor(r.Context(), id, r.PathValue("channel"))
		if err != nil {
			return 0, nil, err
		}
		q, err := parseMetricsQuery(r)
		if err != nil {
			return 0, nil, err
		}
		byFile, err := s.series(r, ch, q, "")
		if err != nil {
			return 0, nil, err
		}
		pkgs := map[string]map[string][]point{}
		for key, pts := range byFile {
			sortPoints(pts)
			if q.fillZeros {
				pts = fill(pts, q)
			}
			pkgs[key] = map[string][]point{"series": pts}
		}
		return http.StatusOK, map[string]any{
			"server_timestamp": naiveTime(s.cfg.Now()), "period": q.period, "metric_name": q.metric, "packages": pkgs,
		}, nil
	})
}

// restVersionMetrics is GET /metrics/channels/{c}/packages/{p}/versions/{platform}/{filename}.
func (s *Server) restVersionMetrics(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ch, v, err := s.versionFor(r.Context(), id, r)
		if err != nil {
			return 0, nil, err
		}
		q, err := parseMetricsQuery(r)
		if err != nil {
			return 0, nil, err
		}
		byFile, err := s.series(r, ch, q, v.Platform+"/"+v.Filename)
		if err != nil {
			return 0, nil, err
		}
		pts := byFile[v.Platform+"/"+v.Filename]
		sortPoints(pts)
		var total int64
		for _, p := range pts {
			total += p.Count
		}
		if q.fillZeros {
			pts = fill(pts, q)
		}
		if pts == nil {
			pts = []point{}
		}
		return http.StatusOK, map[string]any{
			"server_timestamp": naiveTime(s.cfg.Now()), "period": q.period, "metric_name": q.metric, "total": total, "series": pts,
		}, nil
	})
}
