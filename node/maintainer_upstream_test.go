package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestMaintainerUpstreamIsConfined: a server maintainer (not a server
// owner) who creates a proxy or mirror channel on an internal address
// (loopback here, standing for 169.254.169.254 or an admin service) gets
// nothing from it: the channel's fetches are confined to the networks of
// callers who are not server owners. The same upstream works for a server
// owner's channel.
func TestMaintainerUpstreamIsConfined(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.RequestURI())
		mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/channeldata.json"):
			fmt.Fprint(w, `{"channeldata_version":1,"packages":{},"subdirs":[],"secret":"AKIA-INTERNAL-ONLY"}`)
		case strings.HasSuffix(r.URL.Path, "/repodata.json"):
			fmt.Fprint(w, `{"info":{"subdir":"noarch"},"packages":{},"packages.conda":{}}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer internal.Close()
	reached := func() int { mu.Lock(); defer mu.Unlock(); n := len(asked); asked = nil; return n }
	n := nodetest.Start(t) // default fetch networks: loopback denied to non-owners
	do := func(key, method, path, body string) (int, string) {
		t.Helper()
		st, b := call(t, n.URL(), key, method, path, "", strings.NewReader(body))
		return st, string(b)
	}
	mia := newUser(t, n.URL(), "mia", "maintainer")

	channel := func(key, name, mode string) {
		t.Helper()
		body := fmt.Sprintf(`{"name":%q,"private":false,"mirror_mode":%q,"mirror_channel_url":"%s/latest/meta-data"}`, name, mode, internal.URL)
		if st, b := do(key, "POST", "/api/channels", body); st != 201 {
			t.Fatalf("create %s: %d %s", name, st, b)
		}
	}
	channel(mia, "imds", "proxy")
	st, b := do("", "GET", "/get/imds/channeldata.json", "")
	if strings.Contains(b, "AKIA-INTERNAL-ONLY") || reached() > 0 {
		t.Fatalf("a maintainer's proxy channel fetched from loopback: %d %s", st, b)
	}
	channel(mia, "imds-mirror", "mirror")
	st, b = do(mia, "PUT", "/api/channels/imds-mirror/actions", `{"action":"synchronize_repodata"}`)
	if st != 200 {
		t.Fatalf("sync: %d %s", st, b)
	}
	var job struct{ ID int64 }
	_ = json.Unmarshal([]byte(b), &job)
	waitJobEnds(t, func() string {
		_, b := do(nodetest.AdminKey, "GET", fmt.Sprintf("/api/jobs/%d", job.ID), "")
		return b
	})
	if n := reached(); n > 0 {
		t.Fatalf("a maintainer's mirror channel made %d requests to loopback", n)
	}

	// A server owner's channel on the same upstream is served.
	channel(nodetest.AdminKey, "owned", "proxy")
	if st, b := do("", "GET", "/get/owned/channeldata.json", ""); st != 200 || !strings.Contains(b, "AKIA-INTERNAL-ONLY") || reached() == 0 {
		t.Fatalf("a server owner's proxy channel: %d %s", st, b)
	}
}

// waitJobEnds polls a job's JSON (from get) until it reads success,
// failed or cancelled.
func waitJobEnds(t *testing.T, get func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := get()
		for _, st := range []string{`"success"`, `"failed"`, `"cancelled"`} {
			if strings.Contains(b, st) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("job did not end: %s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
