// Package metrics counts package downloads (batched into replicated hourly
// counts) and keeps the node's Prometheus metrics.
package metrics

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// Proposer replicates catalog commands.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// DownloadsConfig configures a Downloads counter.
type DownloadsConfig struct {
	// FlushEvery is the longest a count waits before it is written.
	// Default 10 s. A crash loses at most this much counting.
	FlushEvery time.Duration
	// MaxPending flushes early once this many distinct (file, hour) counts
	// are pending. Default 1000.
	MaxPending int
	Logger     *slog.Logger
	// NodeID and LastSeq number this node's batches: each carries the
	// node id and a sequence number above the last one applied (LastSeq
	// reads it from the replicated state), and a batch whose write failed
	// is retried as it was, so an ambiguous failure cannot count twice.
	// Without NodeID batches are not numbered.
	NodeID  string
	LastSeq func(ctx context.Context, nodeID string) (uint64, error)
}

type dlKey struct {
	channel, platform, filename string
	hour                        int64
}

// Downloads batches download counts: Count is a map increment; Run writes
// the batch as one Raft command every FlushEvery (never one write per
// download); Flush writes what is pending (graceful shutdown).
type Downloads struct {
	cfg     DownloadsConfig
	prop    Proposer
	log     *slog.Logger
	mu      sync.Mutex
	pending map[dlKey]int64
	wake    chan struct{}
	flushMu sync.Mutex         // one flush at a time
	unsent  *v1.AddDownloadsOp // a batch whose write failed, retried first
	seq     uint64             // last sequence number used (0: not loaded)
}

// NewDownloads returns a counter.
func NewDownloads(cfg DownloadsConfig, prop Proposer) *Downloads {
	if cfg.FlushEvery == 0 {
		cfg.FlushEvery = 10 * time.Second
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Downloads{cfg: cfg, prop: prop, log: cfg.Logger.With("component", "downloads"), pending: map[dlKey]int64{}, wake: make(chan struct{}, 1)}
}

// Count records one download of channel/platform/filename at t (the
// request time). It never blocks.
func (d *Downloads) Count(channel, platform, filename string, t time.Time) {
	k := dlKey{channel, platform, filename, t.UTC().Truncate(time.Hour).Unix()}
	d.mu.Lock()
	d.pending[k]++
	full := len(d.pending) >= d.cfg.MaxPending
	d.mu.Unlock()
	if full {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// Run flushes periodically until ctx ends. The final flush is the caller's
// (Flush during shutdown, while Raft is still up).
func (d *Downloads) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.wake:
		}
		if err := d.Flush(ctx); err != nil && ctx.Err() == nil {
			d.log.Warn("flush download counts", "err", err)
		}
	}
}

// Flush writes the pending counts in one command. A batch whose write
// failed is written again, unchanged, before new counts: with its
// sequence number the FSM applies it once however often it is sent.
func (d *Downloads) Flush(ctx context.Context) error {
	d.flushMu.Lock()
	defer d.flushMu.Unlock()
	if d.unsent != nil {
		if err := d.send(ctx, d.unsent); err != nil {
			return err
		}
		d.unsent = nil
	}
	d.mu.Lock()
	batch := d.pending
	d.pending = map[dlKey]int64{}
	d.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	counts := make([]*v1.DownloadCount, 0, len(batch))
	for k, n := range batch {
		counts = append(counts, &v1.DownloadCount{Channel: k.channel, Platform: k.platform, Filename: k.filename, HourUnix: k.hour, Count: n})
	}
	sort.Slice(counts, func(i, j int) bool {
		a, b := counts[i], counts[j]
		if a.Channel != b.Channel {
			return a.Channel < b.Channel
		}
		if a.HourUnix != b.HourUnix {
			return a.HourUnix < b.HourUnix
		}
		if a.Platform != b.Platform {
			return a.Platform < b.Platform
		}
		return a.Filename < b.Filename
	})
	op := &v1.AddDownloadsOp{Counts: counts}
	if d.cfg.NodeID == "" {
		if err := d.send(ctx, op); err != nil {
			d.unpend(batch) // unnumbered: merged into the next batch
			return err
		}
		return nil
	}
	if d.seq == 0 && d.cfg.LastSeq != nil {
		last, err := d.cfg.LastSeq(ctx, d.cfg.NodeID)
		if err != nil {
			d.unpend(batch)
			return err
		}
		d.seq = last
	}
	d.seq++
	op.NodeId, op.Seq = d.cfg.NodeID, d.seq
	if err := d.send(ctx, op); err != nil {
		d.unsent = op
		return err
	}
	return nil
}

func (d *Downloads) send(ctx context.Context, op *v1.AddDownloadsOp) error {
	_, err := d.prop.Propose(ctx, &v1.Command{Op: &v1.Command_AddDownloads{AddDownloads: op}})
	return err
}

func (d *Downloads) unpend(batch map[dlKey]int64) {
	d.mu.Lock()
	for k, n := range batch {
		d.pending[k] += n
	}
	d.mu.Unlock()
}
