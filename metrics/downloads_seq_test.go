package metrics

import (
	"context"
	"errors"
	"testing"
	"time"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// flaky fails its first Propose after "applying" it (the ambiguous
// failure of a forward whose answer was lost), then succeeds.
type flaky struct {
	sent  []*v1.AddDownloadsOp
	fails int
}

func (f *flaky) Propose(_ context.Context, cmd *v1.Command) (any, error) {
	f.sent = append(f.sent, proto.Clone(cmd.GetAddDownloads()).(*v1.AddDownloadsOp))
	if f.fails > 0 {
		f.fails--
		return nil, errors.New("connection reset")
	}
	return nil, nil
}

// TestFlushRetriesTheSameBatch: a batch whose write failed is sent again
// unchanged (same node id and sequence number, so the FSM can drop a
// repeat) before newer counts, which get the next number; numbering
// continues from the replicated last sequence number.
func TestFlushRetriesTheSameBatch(t *testing.T) {
	ctx := context.Background()
	p := &flaky{fails: 1}
	d := NewDownloads(DownloadsConfig{NodeID: "n1", LastSeq: func(context.Context, string) (uint64, error) { return 41, nil }}, p)
	now := time.Unix(1_700_000_000, 0)
	d.Count("c", "noarch", "a-1-0.conda", now)
	if err := d.Flush(ctx); err == nil {
		t.Fatal("first flush should fail")
	}
	d.Count("c", "noarch", "b-1-0.conda", now)
	if err := d.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if len(p.sent) != 3 {
		t.Fatalf("%d batches sent, want 3 (fail, retry, new)", len(p.sent))
	}
	if !proto.Equal(p.sent[0], p.sent[1]) || p.sent[1].Seq != 42 || p.sent[1].NodeId != "n1" {
		t.Fatalf("retry %v differs from the failed batch %v", p.sent[1], p.sent[0])
	}
	if p.sent[2].Seq != 43 || len(p.sent[2].Counts) != 1 || p.sent[2].Counts[0].Filename != "b-1-0.conda" {
		t.Fatalf("new batch %v, want seq 43 with b only", p.sent[2])
	}
}
