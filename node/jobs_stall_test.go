package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/node/nodetest"
	"github.com/condamesh/condamesh/upstream"
)

// TestMirrorMetricsCannotStallJobRunner: a channel owner registers a
// mirror whose metrics endpoint answers 200 and then sends its body a byte
// at a time, forever. Jobs run one after the other on the leader, so the
// synchronize_metrics run is bounded (a pull in 10 s, a run in 30 s):
// another user's job still runs soon after.
func TestMirrorMetricsCannotStallJobRunner(t *testing.T) {
	stop := make(chan struct{})
	trickling := make(chan struct{}, 1)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/api/channels/") { // the registry check
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"name":"evil","mirror_channel_url":"http://primary/get/evil","mirror_mode":"mirror"}`)
			return
		}
		w.WriteHeader(200) // the metrics answer: a byte now and then
		select {
		case trickling <- struct{}{}:
		default:
		}
		fl := w.(http.Flusher)
		for {
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			fl.Flush()
		}
	}))
	defer evil.Close()
	defer close(stop)
	// Loopback allowed to restricted fetches only because the test's
	// "public" server is on loopback.
	n := nodetest.Start(t, func(c *node.Config) { c.FetchNetworks = &upstream.Networks{} })
	do := func(key, method, path, body string) (int, map[string]any) {
		t.Helper()
		st, b := call(t, n.URL(), key, method, path, "application/json", strings.NewReader(body))
		var out map[string]any
		_ = json.Unmarshal(b, &out)
		return st, out
	}
	mallory := newUser(t, n.URL(), "mallory", "member")
	if st, b := do(mallory, "POST", "/api/channels", `{"name":"evil","private":false}`); st != 201 {
		t.Fatalf("create channel: %d %v", st, b)
	}
	if st, b := do(mallory, "POST", "/api/channels/evil/mirrors", `{"url":"`+evil.URL+`/get/evil"}`); st != 201 {
		t.Fatalf("register mirror: %d %v", st, b)
	}
	if st, b := do(mallory, "PUT", "/api/channels/evil/actions", `{"action":"synchronize_metrics"}`); st != 200 {
		t.Fatalf("synchronize_metrics: %d %v", st, b)
	}
	select { // the runner picked the job up and is reading the endless body
	case <-trickling:
	case <-time.After(30 * time.Second):
		t.Fatal("the synchronize_metrics job never called the mirror")
	}

	// Someone else's job, any job: it should run within seconds.
	if st, b := do(nodetest.AdminKey, "POST", "/api/channels", `{"name":"other","private":false}`); st != 201 {
		t.Fatalf("create channel: %d %v", st, b)
	}
	st, job := do(nodetest.AdminKey, "PUT", "/api/channels/other/actions", `{"action":"generate_indexes"}`)
	if st != 200 {
		t.Fatalf("generate_indexes: %d %v", st, job)
	}
	id := int64(job["id"].(float64))
	deadline := time.Now().Add(45 * time.Second)
	for {
		_, j := do(nodetest.AdminKey, "GET", fmt.Sprintf("/api/jobs/%d", id), "")
		if j["status"] == "success" || j["status"] == "failed" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a channel owner's stalled mirror metrics endpoint keeps every other job from running: job %d still %v after 45 s", id, j["status"])
		}
		time.Sleep(200 * time.Millisecond)
	}
}
