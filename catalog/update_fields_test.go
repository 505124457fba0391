package catalog_test

import (
	"context"
	"errors"
	"testing"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// TestUpdateChannelSetsOnlyItsFields: an update that names its fields
// changes those on the channel as it is when the command applies; the
// channel it carries may be an older read (another update applied in
// between), and what else differs in it is ignored. Without fields the
// channel is replaced (entries proposed before fields existed).
func TestUpdateChannelSetsOnlyItsFields(t *testing.T) {
	limit := int64(5)
	base := &v1.Channel{Name: "c", Description: "d", Ttl: 10, SizeLimit: &limit, Metadata: &v1.ChannelMetadata{Prune: true, SyncIntervalSeconds: 60}}
	// stale is what a proposer read before private was set to true.
	stale := func(f func(*v1.Channel)) *v1.Channel {
		ch := proto.Clone(base).(*v1.Channel)
		f(ch)
		return ch
	}
	for _, tc := range []struct {
		name   string
		op     *v1.UpdateChannelOp
		want   func(*v1.Channel) bool
		reason string
	}{
		{"ttl", &v1.UpdateChannelOp{Channel: stale(func(c *v1.Channel) { c.Ttl = 20 }), Fields: []string{"ttl"}},
			func(c *v1.Channel) bool { return c.Ttl == 20 && c.Private }, "ttl 20 and private kept"},
		{"size limit removed", &v1.UpdateChannelOp{Channel: stale(func(c *v1.Channel) { c.SizeLimit = nil }), Fields: []string{"size_limit"}},
			func(c *v1.Channel) bool { return c.SizeLimit == nil && c.Private && c.Ttl == 10 }, "no size limit, the rest kept"},
		{"one metadata field", &v1.UpdateChannelOp{Channel: stale(func(c *v1.Channel) { c.Metadata.SyncIntervalSeconds = 5; c.Metadata.Prune = false }), Fields: []string{"metadata.sync_interval_seconds"}},
			func(c *v1.Channel) bool {
				return c.GetMetadata().GetSyncIntervalSeconds() == 5 && c.GetMetadata().GetPrune() && c.Private
			}, "interval 5, prune and private kept"},
		{"whole metadata", &v1.UpdateChannelOp{Channel: stale(func(c *v1.Channel) { c.Metadata = &v1.ChannelMetadata{Prune: false} }), Fields: []string{"metadata"}},
			func(c *v1.Channel) bool {
				return c.GetMetadata().GetSyncIntervalSeconds() == 0 && !c.GetMetadata().GetPrune() && c.Private
			},
			"metadata replaced, private kept"},
		{"no fields: replace", &v1.UpdateChannelOp{Channel: stale(func(c *v1.Channel) { c.Ttl = 30 })},
			func(c *v1.Channel) bool { return c.Ttl == 30 && !c.Private }, "the stale record (private false)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: base}}})
			now := proto.Clone(base).(*v1.Channel)
			now.Private = true
			r.apply(t, &v1.Command{Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: now, Fields: []string{"private"}}}})
			r.apply(t, &v1.Command{Op: &v1.Command_UpdateChannel{UpdateChannel: tc.op}})
			got, err := r.cat.Channel(context.Background(), "c")
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(got) || got.Description != "d" {
				t.Fatalf("got %v, want %s", got, tc.reason)
			}
		})
	}
	for _, f := range []string{"nosuch", "ttl.x", "metadata.nosuch"} {
		r := newRig(t)
		r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: base}}})
		_, err := r.cat.Apply(context.Background(), 9, &v1.Command{TimeUnixNano: 1, Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: base, Fields: []string{f}}}})
		if !errors.Is(err, catalog.ErrInvalid) {
			t.Errorf("field %q: %v, want ErrInvalid", f, err)
		}
	}
}

// TestCreatedIndexIsTheServers: a channel's created_index is the Raft
// index of its create, whatever the command carried; an update (with or
// without fields, naming it or not) keeps it; a channel created again gets
// its own.
func TestCreatedIndexIsTheServers(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	get := func() *v1.Channel {
		t.Helper()
		ch, err := r.cat.Channel(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c", CreatedIndex: 999}}}})
	first := r.idx
	if got := get().CreatedIndex; got != first {
		t.Fatalf("created_index %d, want the create's index %d", got, first)
	}
	for _, op := range []*v1.UpdateChannelOp{
		{Channel: &v1.Channel{Name: "c", CreatedIndex: 7, Ttl: 5}},
		{Channel: &v1.Channel{Name: "c", CreatedIndex: 7}, Fields: []string{"created_index"}},
	} {
		r.apply(t, &v1.Command{Op: &v1.Command_UpdateChannel{UpdateChannel: op}})
		if got := get().CreatedIndex; got != first {
			t.Fatalf("after update %v: created_index %d, want %d", op, got, first)
		}
	}
	r.apply(t, &v1.Command{Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: "c"}}})
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	if got := get().CreatedIndex; got != r.idx || got == first {
		t.Fatalf("created again: created_index %d, want %d", got, r.idx)
	}
}
