package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/jobs"
	"github.com/condamesh/condamesh/upstream"
	"golang.org/x/sync/errgroup"
)

// Bounds of a synchronize_metrics run. The registry's endpoints are given
// by channel owners, and jobs run one after another on the leader: a
// mirror that answers slowly, or never finishes its body, must not hold
// the runner.
const (
	// maxMetricsBody bounds a mirror's metrics answer, decoded and on the
	// wire.
	maxMetricsBody = 64 << 20
	// pullTimeout bounds one mirror's pull, body included.
	pullTimeout = 10 * time.Second
	// pullJobTimeout bounds one run over all of a channel's mirrors; the
	// mirrors not pulled by then are pulled at the next run (their
	// cursors did not move).
	pullJobTimeout = 30 * time.Second
	// pullParallel is how many mirrors are pulled at once.
	pullParallel = 8
)

// ErrBadMetrics is a mirror's metrics answer that cannot be used.
var ErrBadMetrics = errors.New("metrics: bad answer from mirror")

// MirrorPuller is the synchronize_metrics action: it pulls the hourly
// download counts of closed hours from every mirror registered with a
// channel and adds them to the channel's counts (and to the mirror's own
// ledger). Each mirror's cursor moves in the same Raft entry as its counts,
// so every hour is counted exactly once however often the action runs or
// fails; "now" is read at each run.
type MirrorPuller struct {
	cat  *catalog.Catalog
	prop Proposer
	up   *upstream.Client
	now  func() time.Time
	log  *slog.Logger
}

// NewMirrorPuller returns the action's implementation.
func NewMirrorPuller(cat *catalog.Catalog, prop Proposer, up *upstream.Client, now func() time.Time, log *slog.Logger) *MirrorPuller {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.Default()
	}
	return &MirrorPuller{cat: cat, prop: prop, up: up, now: now, log: log.With("component", "metrics")}
}

// Action returns the job action.
func (p *MirrorPuller) Action() jobs.Action {
	return func(ctx context.Context, j *v1.Job) error {
		// The registry's endpoints were given by channel owners: a job
		// not created by a server owner reaches only the networks such
		// callers may reach, and learns nothing of what answered.
		restricted := true
		if u, err := p.cat.User(ctx, j.OwnerId); err == nil && u.Role == "owner" {
			restricted = false
		}
		return p.pull(ctx, j.Channel, restricted)
	}
}

// Pull synchronises one channel's mirrors. A mirror that fails is reported
// and retried at the next run with the same window; the others go on.
func (p *MirrorPuller) Pull(ctx context.Context, channel string) error {
	return p.pull(ctx, channel, false)
}

func (p *MirrorPuller) pull(parent context.Context, channel string, restricted bool) error {
	mirrors, err := p.cat.Mirrors(parent, channel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(parent, pullJobTimeout)
	defer cancel()
	var mu sync.Mutex
	var prog jobs.Progress
	prog.FilesTotal = int64(len(mirrors))
	g := errgroup.Group{}
	g.SetLimit(pullParallel)
	for _, m := range mirrors {
		g.Go(func() error {
			mctx, cancel := context.WithTimeout(ctx, pullTimeout)
			// Confined if the job's owner or whoever registered the
			// mirror is not a server owner.
			err := p.pullOne(mctx, channel, m, restricted || m.Restricted)
			cancel()
			mu.Lock()
			defer mu.Unlock()
			if err != nil && parent.Err() == nil {
				shown := err.Error()
				if restricted || m.Restricted {
					shown = "the mirror's metrics could not be pulled"
				}
				prog.Errors++
				jobs.ReportError(parent, fmt.Sprintf("%s: %s", upstream.Redact(m.Url), shown))
				p.log.Warn("pull mirror metrics", "channel", channel, "mirror", upstream.Redact(m.Url), "err", err)
			}
			prog.FilesDone++
			jobs.Report(parent, prog)
			return nil
		})
	}
	_ = g.Wait()
	return parent.Err()
}

func (p *MirrorPuller) pullOne(ctx context.Context, channel string, m *v1.ChannelMirror, restricted bool) error {
	end := p.now().UTC().Truncate(time.Hour)
	q := "period=H"
	if m.LastSynchronisedUnix != 0 {
		start := time.Unix(m.LastSynchronisedUnix, 0).UTC().Truncate(time.Hour)
		if !start.Before(end) {
			return nil // no closed hour since the last pull
		}
		q += "&start=" + start.Format("2006-01-02T15:04:05")
	}
	q += "&end=" + end.Format("2006-01-02T15:04:05")
	u, err := url.Parse(m.MetricsEndpoint)
	if err != nil {
		return fmt.Errorf("%w: metrics endpoint: %v", ErrBadMetrics, err)
	}
	u.RawQuery = q // naive timestamps unencoded, as Quetz sends them
	resp, err := p.up.Get(ctx, upstream.Request{URL: u.String(), Restricted: restricted, MaxBytes: maxMetricsBody})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBody+1))
	if err != nil {
		return fmt.Errorf("%w: %v", upstream.ErrUnavailable, err)
	}
	if len(body) > maxMetricsBody {
		return fmt.Errorf("%w: answer larger than %d bytes", ErrBadMetrics, maxMetricsBody)
	}
	var doc struct {
		Packages map[string]struct {
			Series []struct {
				Timestamp string `json:"timestamp"`
				Count     int64  `json:"count"`
			} `json:"series"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(body, &doc); err != nil || doc.Packages == nil {
		return fmt.Errorf("%w: no packages object", ErrBadMetrics)
	}
	var counts []*v1.DownloadCount
	for key, s := range doc.Packages {
		platform, filename, ok := strings.Cut(key, "/")
		if !ok || platform == "" || filename == "" || strings.Contains(filename, "/") {
			return fmt.Errorf("%w: bad package key %q", ErrBadMetrics, key)
		}
		for _, pt := range s.Series {
			t, err := time.Parse("2006-01-02T15:04:05", strings.TrimSuffix(pt.Timestamp, "Z"))
			if err != nil {
				return fmt.Errorf("%w: bad timestamp %q", ErrBadMetrics, pt.Timestamp)
			}
			if pt.Count < 0 || pt.Count > 1<<40 {
				return fmt.Errorf("%w: bad count %d", ErrBadMetrics, pt.Count)
			}
			if !t.Before(end) || (m.LastSynchronisedUnix != 0 && t.Unix() < m.LastSynchronisedUnix) {
				continue // outside the window: never count an open or an old hour
			}
			counts = append(counts, &v1.DownloadCount{Channel: channel, Platform: platform, Filename: filename, HourUnix: t.Truncate(time.Hour).Unix(), Count: pt.Count})
		}
	}
	_, err = p.prop.Propose(ctx, &v1.Command{Op: &v1.Command_AddDownloads{AddDownloads: &v1.AddDownloadsOp{
		Counts: counts, MirrorId: m.Id, MirrorChannel: channel, CursorUnix: end.Unix(),
	}}})
	return err
}
