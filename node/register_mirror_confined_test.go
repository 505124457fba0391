package node_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/condamesh/condamesh/node/nodetest"
)

// TestMaintainerMirrorRegistrationIsConfined: POST /api/channels with
// register_mirror=true makes the server POST to the new mirror channel's
// upstream (its primary's /api/channels/<c>/mirrors). For a channel whose
// upstream a caller who is not a server owner gave (upstream_restricted),
// that call is a server-side request made for that caller and must be
// confined like the channel's fetches: a maintainer must not make the node
// POST, with a header of their choosing, to loopback.
func TestMaintainerMirrorRegistrationIsConfined(t *testing.T) {
	var mu sync.Mutex
	var posts []string
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			mu.Lock()
			posts = append(posts, r.URL.RequestURI()+" key="+r.Header.Get("X-API-Key"))
			mu.Unlock()
			w.WriteHeader(http.StatusCreated)
			return
		}
		http.NotFound(w, r)
	}))
	defer internal.Close()
	n := nodetest.Start(t) // default fetch networks: loopback denied to non-owners
	mia := newUser(t, n.URL(), "mia", "maintainer")
	body := fmt.Sprintf(`{"name":"reg","private":false,"mirror_mode":"mirror","mirror_channel_url":"%s/get/admin"}`, internal.URL)
	st, b := call(t, n.URL(), mia, "POST", "/api/channels?register_mirror=true&mirror_api_key=chosen-header", "", strings.NewReader(body))
	if st != 201 {
		t.Fatalf("create mirror channel: %d %s", st, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(posts) > 0 {
		t.Fatalf("a maintainer's mirror channel made the node POST to loopback: %q", posts)
	}
}
