package cluster

import (
	"bytes"
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

// FuzzDecodeMeta: a peer's gossip metadata is untrusted. DecodeMeta never
// panics, refuses more than memberlist's bound, and what it accepts
// re-encodes within the bound and decodes to the same message.
func FuzzDecodeMeta(f *testing.F) {
	good, _ := EncodeMeta(&v1.NodeMeta{ClusterId: "abc", RaftAddr: "127.0.0.1:8300", HttpUrl: "http://127.0.0.1:8000", Site: "a", ProtoMin: 1, ProtoMax: 1, SecretFingerprint: "0123456789abcdef"})
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x03, 'x', 'y', 'z'}) // raft_addr without a port
	f.Add(bytes.Repeat([]byte{0x0a, 0x01, 'a'}, 200))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		if len(b) > maxMeta {
			t.Fatalf("accepted %d bytes", len(b))
		}
		out, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := DecodeMeta(out)
		if err != nil || !proto.Equal(m, m2) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}
