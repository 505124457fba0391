package api

import (
	"fmt"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"github.com/condamesh/condamesh/cluster"
)

// TestClassifyClusterErrors: the cluster's refusals are 503 / Unavailable, so
// clients retry elsewhere, and never a 500.
func TestClassifyClusterErrors(t *testing.T) {
	for _, err := range []error{
		fmt.Errorf("propose: %w", cluster.ErrNotLeader),
		fmt.Errorf("propose: %w: stopped applying the Raft log at index 7", cluster.ErrHalted),
	} {
		st, code, _ := classify(err)
		if st != http.StatusServiceUnavailable || code != connect.CodeUnavailable {
			t.Errorf("%v: %d %v, want 503 unavailable", err, st, code)
		}
	}
}
