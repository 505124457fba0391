package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func putUser(id string) *v1.Command {
	return &v1.Command{TimeUnixNano: 1e18, Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: &v1.User{Id: id, Username: id, Role: "owner"}}}}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// unknownOp is an entry whose operation is field 99 of Command, which this
// build does not know (a newer build's operation).
func unknownOp() []byte {
	b := protowire.AppendTag(nil, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 1e18)
	b = protowire.AppendTag(b, 99, protowire.BytesType)
	return protowire.AppendBytes(b, []byte{0x0a, 0x01, 'x'})
}

// poll calls cond until it holds or 10 s pass.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUnsupportedCommandHalts: an entry this build cannot apply (an unknown
// operation, a version above catalog.ProtocolVersion) stops applying at that
// entry: later entries are not applied, Halted says why (index and version),
// Propose answers ErrHalted, Close returns, and a restart halts at the same
// place.
func TestUnsupportedCommandHalts(t *testing.T) {
	newer := putUser("u9")
	newer.Version = catalog.ProtocolVersion + 1
	cases := []struct {
		name  string
		entry func(t *testing.T) []byte
		want  string // in Halted
	}{
		{"unknown operation", func(t *testing.T) []byte { return unknownOp() }, "an unknown operation (command version 0)"},
		{"newer version", func(t *testing.T) []byte { return mustMarshal(t, newer) }, fmt.Sprintf("needs version %d", catalog.ProtocolVersion+1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			sm := newMachine(t)
			dir := t.TempDir()
			cl := openCluster(t, dir, sm)
			if _, err := cl.Propose(ctx, putUser("u1")); err != nil {
				t.Fatal(err)
			}
			last := cl.LastIndex()
			var l raft.Log
			if err := cl.logs.GetLog(last, &l); err != nil {
				t.Fatal(err)
			}
			if cmd, err := DecodeCommand(l.Data); err != nil || cmd.Version != 1 {
				t.Fatalf("proposed entry: version %d (%v), want 1 (a user write is of the first release)", cmd.GetVersion(), err)
			}
			bad := last + 1
			cl.raft.Apply(c.entry(t), 10*time.Second)
			cl.raft.Apply(mustMarshal(t, putUser("u2")), 10*time.Second)
			poll(t, "Halted", func() bool { return cl.Halted() != "" })
			h := cl.Halted()
			if !strings.Contains(h, fmt.Sprintf("index %d", bad)) || !strings.Contains(h, c.want) {
				t.Fatalf("Halted() = %q, want index %d and %q", h, bad, c.want)
			}
			poll(t, "the later entry to commit", func() bool { return cl.raft.Stats()["commit_index"] == fmt.Sprint(bad+1) })
			if idx, _ := sm.st.AppliedIndex(ctx); idx != last {
				t.Fatalf("store applied index %d, want %d (stopped before the entry)", idx, last)
			}
			if _, err := sm.cat.User(ctx, "u2"); err == nil {
				t.Fatal("an entry after the unsupported one was applied")
			}
			if _, err := cl.Propose(ctx, putUser("u3")); !errors.Is(err, ErrHalted) {
				t.Fatalf("Propose on a halted node: %v, want ErrHalted", err)
			}
			closeWithin(t, cl)

			// A restart (same log, same store) halts at the same entry.
			cl, err := Open(ctx, Config{NodeID: "n1", Dir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: true,
				HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond, LeaderLeaseTimeout: 100 * time.Millisecond}, sm)
			if err != nil {
				t.Fatal(err)
			}
			poll(t, "Halted after restart", func() bool { return strings.Contains(cl.Halted(), fmt.Sprintf("index %d", bad)) })
			if _, err := sm.cat.User(ctx, "u2"); err == nil {
				t.Fatal("after restart, an entry after the unsupported one was applied")
			}
			closeWithin(t, cl)
		})
	}
}

// closeWithin fails the test if Close does not return within 10 s.
func closeWithin(t *testing.T, cl *Cluster) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cl.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return on a halted node")
	}
}

// TestDecodeCommandVersions: what DecodeCommand makes of versions and
// unknown fields.
func TestDecodeCommandVersions(t *testing.T) {
	withVersion := func(v uint32) []byte {
		c := putUser("u")
		c.Version = v
		return mustMarshal(t, c)
	}
	cases := []struct {
		name string
		data []byte
		want error // nil: decodes
	}{
		{"unversioned (older proposer)", withVersion(0), nil},
		{"current version", withVersion(catalog.ProtocolVersion), nil},
		{"newer version", withVersion(catalog.ProtocolVersion + 1), ErrUnsupportedCommand},
		{"unknown operation", unknownOp(), ErrUnsupportedCommand},
		{"no operation at all", mustMarshal(t, &v1.Command{TimeUnixNano: 5}), ErrBadCommand},
		{"not protobuf", []byte{0xff, 0x01}, ErrBadCommand},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := DecodeCommand(c.data)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("DecodeCommand: %v, want %v", err, c.want)
			}
		})
	}
}
