package api

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestWaitsReadIndex: which requests wait for the read index before their
// handler reads the catalog: consistent reads and every write, but not
// plain reads, the cluster membership calls (a joining node has no leader
// yet) nor the node-to-node mounts.
func TestWaitsReadIndex(t *testing.T) {
	s := &Server{mounts: map[string]http.Handler{"/condamesh.v1.PeerService/": http.NotFoundHandler()}}
	for _, tc := range []struct {
		method, target string
		header         string
		want           bool
	}{
		{"GET", "/api/channels/c", "", false},
		{"HEAD", "/get/c/noarch/repodata.json", "", false},
		{"GET", "/api/channels/c?consistent=true", "", true},
		{"GET", "/api/channels/c?consistent=false", "", false},
		{"POST", "/api/channels", "", true},
		{"PATCH", "/api/channels/c", "", true},
		{"DELETE", "/api/channels/c", "", true},
		{"POST", "/api/channels/c/upload/x-1-0.conda?sha256=00", "", true},
		{"PUT", "/api/users/u/role", "", true},
		{"POST", "/condamesh.v1.ChannelService/CreateChannel", "", true},
		{"POST", "/condamesh.v1.ChannelService/GetChannel", "", false},
		{"POST", "/condamesh.v1.ChannelService/GetChannel", "true", true},
		{"POST", "/condamesh.v1.PackageService/ListVersions", "", false},
		{"POST", "/condamesh.v1.KeyService/DeleteKey", "", true},
		{"POST", "/api/cluster/join", "", false},
		{"DELETE", "/api/cluster/nodes/n1", "", false},
		{"POST", "/condamesh.v1.ClusterService/Join", "", false},
		{"POST", "/condamesh.v1.PeerService/Forward", "", false},
	} {
		r := httptest.NewRequest(tc.method, tc.target, nil)
		if tc.header != "" {
			r.Header.Set(ConsistentHeader, tc.header)
		}
		if got := s.waitsReadIndex(r); got != tc.want {
			t.Errorf("%s %s (consistent header %q): waits %v, want %v", tc.method, tc.target, tc.header, got, tc.want)
		}
	}
}
