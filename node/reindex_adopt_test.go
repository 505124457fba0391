package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/condamesh/condamesh/node/nodetest"
)

// TestReindexDoesNotAdoptOthersPackages: reindex adopts every package
// archive of the store that nothing references into the job's channel. A
// server member may create a channel and run reindex on it; a package just
// deleted from another user's private channel is such an archive until a
// sweep (at least the 15 min grace). The member must not get it.
func TestReindexDoesNotAdoptOthersPackages(t *testing.T) {
	n := nodetest.Start(t)
	do := func(key, method, path string, body []byte) (int, []byte) {
		t.Helper()
		return call(t, n.URL(), key, method, path, "", bytes.NewReader(body))
	}
	if st, b := do(nodetest.AdminKey, "POST", "/api/channels", []byte(`{"name":"secret","private":true}`)); st != 201 {
		t.Fatalf("create secret: %d %s", st, b)
	}
	spec := condatest.Spec{Name: "confidential", Version: "1.0", Build: "0", Files: map[string]string{"share/secret.txt": strings.Repeat("TOP SECRET ", 100)}}
	data, file := condatest.TarBz2(t, spec), condatest.Filename(spec, ".tar.bz2")
	if st, b := do(nodetest.AdminKey, "POST", "/api/channels/secret/upload/"+file+"?sha256="+sha(data), data); st != 201 {
		t.Fatalf("upload: %d %s", st, b)
	}
	if st, b := do(nodetest.AdminKey, "DELETE", "/api/channels/secret/packages/confidential", nil); st != 200 {
		t.Fatalf("delete package: %d %s", st, b)
	}

	eve := newUser(t, n.URL(), "eve", "member")
	if st, b := do(eve, "POST", "/api/channels", []byte(`{"name":"eve","private":false}`)); st != 201 {
		t.Fatalf("member creates a channel: %d %s", st, b)
	}
	st, b := do(eve, "PUT", "/api/channels/eve/actions", []byte(`{"action":"reindex"}`))
	if st != 200 {
		t.Fatalf("reindex: %d %s", st, b)
	}
	var job struct{ ID int64 }
	_ = json.Unmarshal(b, &job)
	waitJobEnds(t, func() string {
		_, b := do(nodetest.AdminKey, "GET", fmt.Sprintf("/api/jobs/%d", job.ID), nil)
		return string(b)
	})
	time.Sleep(200 * time.Millisecond) // the index regenerates
	if st, b := do("", "GET", "/get/eve/noarch/"+file, nil); st == 200 && bytes.Equal(b, data) {
		t.Fatalf("a member's reindex adopted %s, deleted from another user's private channel, and serves it", file)
	}
	if _, err := n.Catalog().Version(t.Context(), "eve", "noarch", file); err == nil {
		t.Fatalf("a member's reindex recorded %s from another user's private channel", file)
	}
}
