package cluster

import (
	"testing"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/hashicorp/raft"
)

// TestVotersProto: the command version a cluster may propose is the lowest
// any voter gossips; non-voters do not count; a voter not heard of counts
// as the oldest version.
func TestVotersProto(t *testing.T) {
	servers := []raft.Server{
		{ID: "self", Suffrage: raft.Voter},
		{ID: "a", Suffrage: raft.Voter},
		{ID: "b", Suffrage: raft.Voter},
		{ID: "n", Suffrage: raft.Nonvoter},
	}
	for _, tc := range []struct {
		name string
		meta map[string]*v1.NodeMeta
		want uint32
	}{
		{"all current", map[string]*v1.NodeMeta{"a": {ProtoMax: ProtoMax}, "b": {ProtoMax: ProtoMax + 3}, "n": {ProtoMax: 1}}, ProtoMax},
		{"an older voter", map[string]*v1.NodeMeta{"a": {ProtoMax: ProtoMax}, "b": {ProtoMax: 1}}, 1},
		{"a voter unheard of", map[string]*v1.NodeMeta{"a": {ProtoMax: ProtoMax}}, ProtoMin},
		{"a voter without versions", map[string]*v1.NodeMeta{"a": {ProtoMax: ProtoMax}, "b": {}}, ProtoMin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := votersProto(servers, "self", func(id string) *v1.NodeMeta { return tc.meta[id] })
			if got != tc.want {
				t.Fatalf("votersProto = %d, want %d", got, tc.want)
			}
		})
	}
}
