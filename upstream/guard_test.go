package upstream_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/condamesh/condamesh/upstream"
)

// recorder is an upstream that records the Authorization of every request.
type recorder struct {
	mu    sync.Mutex
	auths []string
	to    string // if set, every request is redirected there (path kept)
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.auths = append(r.auths, req.Header.Get("Authorization"))
	to := r.to
	r.mu.Unlock()
	if to != "" {
		http.Redirect(w, req, to+req.URL.Path, http.StatusFound)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func (r *recorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.auths...)
}

// TestRedirectCredentials: the channel's Authorization goes to the first
// request's exact origin only: not to another port of the same host, nor
// to another host; a redirect within the origin keeps it.
func TestRedirectCredentials(t *testing.T) {
	final := &recorder{}
	finalSrv := httptest.NewServer(final)
	defer finalSrv.Close()
	c := upstream.New(upstream.Config{AttemptTimeout: 5 * time.Second, Retries: 1})
	for _, tc := range []struct {
		name, to string
		want     string
	}{
		{"other port of the same host", finalSrv.URL, ""},
		{"other host name for the same address", strings.Replace(finalSrv.URL, "127.0.0.1", "localhost", 1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := &recorder{to: tc.to}
			srv := httptest.NewServer(first)
			defer srv.Close()
			before := len(final.seen())
			resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/linux-64/repodata.json", Authorization: "Bearer secret"})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := first.seen(); len(got) != 1 || got[0] != "Bearer secret" {
				t.Fatalf("first origin saw %q", got)
			}
			got := final.seen()[before:]
			if len(got) != 1 || got[0] != tc.want {
				t.Fatalf("redirect target saw Authorization %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("same origin", func(t *testing.T) {
		same := &recorder{}
		mux := http.NewServeMux()
		mux.HandleFunc("/old/", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/new/"+strings.TrimPrefix(r.URL.Path, "/old/"), http.StatusMovedPermanently)
		})
		mux.Handle("/new/", same)
		srv := httptest.NewServer(mux)
		defer srv.Close()
		resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/old/x", Authorization: "Bearer secret"})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := same.seen(); len(got) != 1 || got[0] != "Bearer secret" {
			t.Fatalf("same-origin redirect lost the credentials: %q", got)
		}
	})
}

// TestRedirectAddressRules: by default a redirect goes to a public address
// or to one of the first host's class; a loopback upstream cannot send the
// node to a link-local (cloud metadata) address.
func TestRedirectAddressRules(t *testing.T) {
	link := &recorder{to: "http://169.254.169.254"}
	srv := httptest.NewServer(link)
	defer srv.Close()
	for _, tc := range []struct {
		policy upstream.RedirectPolicy
		want   error
	}{
		{upstream.RedirectSameRules, upstream.ErrForbiddenAddress},
		{upstream.RedirectNone, upstream.ErrRefused},
	} {
		c := upstream.New(upstream.Config{AttemptTimeout: 2 * time.Second, Retries: 1, Redirects: tc.policy})
		_, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/latest/meta-data/"})
		if !errors.Is(err, tc.want) {
			t.Fatalf("policy %s: redirect to link-local: %v, want %v", tc.policy, err, tc.want)
		}
	}
	// Loopback to loopback (the same class) is followed.
	target := &recorder{}
	tsrv := httptest.NewUnstartedServer(target)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	tsrv.Listener.Close()
	tsrv.Listener = ln
	tsrv.Start()
	defer tsrv.Close()
	hop := &recorder{to: tsrv.URL}
	hsrv := httptest.NewServer(hop)
	defer hsrv.Close()
	c := upstream.New(upstream.Config{AttemptTimeout: 2 * time.Second, Retries: 1})
	resp, err := c.Get(context.Background(), upstream.Request{URL: hsrv.URL + "/x"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(target.seen()) != 1 {
		t.Fatal("the loopback-to-loopback redirect was not followed")
	}
}

// TestNetworksPermits is the restricted policy's table.
func TestNetworksPermits(t *testing.T) {
	def := upstream.DefaultRestricted()
	allow10, _ := upstream.ParsePrefixes("10.0.0.0/8")
	only10 := upstream.Networks{Allow: allow10}
	for _, tc := range []struct {
		nets upstream.Networks
		addr string
		want bool
	}{
		{def, "127.0.0.1", false},
		{def, "127.9.9.9", false},
		{def, "::1", false},
		{def, "::ffff:127.0.0.1", false},
		{def, "169.254.169.254", false},
		{def, "fe80::1", false},
		{def, "0.0.0.0", false},
		{def, "10.1.2.3", true},
		{def, "93.184.216.34", true},
		{only10, "10.1.2.3", true},
		{only10, "93.184.216.34", false},
	} {
		if got := tc.nets.Permits(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%+v permits %s = %v, want %v", tc.nets, tc.addr, got, tc.want)
		}
	}
	if _, err := upstream.ParsePrefixes("10.0.0.0/8, nope"); err == nil {
		t.Fatal("a bad network was accepted")
	}
}

// TestRestrictedFetch: a restricted fetch never connects to a denied
// address, and its error does not tell a closed port from an open one.
func TestRestrictedFetch(t *testing.T) {
	rec := &recorder{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	c := upstream.New(upstream.Config{AttemptTimeout: 2 * time.Second, Retries: 1})
	_, openErr := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/x", Restricted: true})
	_, closedErr := c.Get(context.Background(), upstream.Request{URL: "http://127.0.0.1:1/x", Restricted: true})
	if openErr == nil || closedErr == nil {
		t.Fatalf("restricted fetches of loopback: %v, %v", openErr, closedErr)
	}
	if len(rec.seen()) != 0 {
		t.Fatalf("a restricted fetch reached loopback")
	}
	if openErr.Error() != closedErr.Error() {
		t.Fatalf("open and closed ports read differently: %q vs %q", openErr, closedErr)
	}
	// The same client still fetches loopback for an unrestricted request.
	resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/x"})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

// TestStalledBodyIsCut: an upstream that sends its head and a few bytes,
// then nothing, is cut after AttemptTimeout of silence (ErrTimeout), so no
// reader (and no request waiting on the same file) waits for ever; a
// reader that pauses between reads is not cut.
func TestStalledBodyIsCut(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		_, _ = io.WriteString(w, "abc")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/slow-reader" {
			_, _ = io.WriteString(w, strings.Repeat("x", 997))
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	c := upstream.New(upstream.Config{AttemptTimeout: 300 * time.Millisecond, Retries: 1})
	resp, err := c.Get(context.Background(), upstream.Request{URL: srv.URL + "/stall"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, upstream.ErrTimeout) {
			t.Fatalf("stalled body: %v, want ErrTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stalled upstream body was never cut")
	}

	resp, err = c.Get(context.Background(), upstream.Request{URL: srv.URL + "/slow-reader"})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 3)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // the reader pauses longer than the idle bound
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 997 {
		t.Fatalf("a reader that paused was cut: %d bytes, %v", len(rest), err)
	}
}
