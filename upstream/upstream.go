// Package upstream fetches files from upstream conda channels for proxy and
// mirror channels: conditional requests, per-attempt timeouts, retries with
// exponential backoff on transport errors and 429/5xx, credentials sent as
// a header, and URLs redacted (tokens and passwords) wherever they are
// logged or returned in an error. GetMany fetches the many files of a
// mirror sync over pipelined HTTP/1.1 connections (pipeline.go), reading
// plain answers with a lean head reader (head.go) and handing anything
// unusual back to Get. Redirects keep credentials on the first request's exact
// origin and follow a policy on address classes (guard.go); fetches made
// for callers who are not server owners are confined to a network policy
// checked on the dialled address, and their errors say nothing of what
// answered.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/condamesh/condamesh/internal/secret"
)

// Errors returned by Get.
var (
	// ErrNotFound: the upstream answered 404 or 410.
	ErrNotFound = errors.New("upstream: not found")
	// ErrUnavailable: the upstream could not be reached or kept failing
	// (5xx, 429, refused connections, resets) after the retries.
	ErrUnavailable = errors.New("upstream: unavailable")
	// ErrTimeout: the upstream did not answer in time.
	ErrTimeout = errors.New("upstream: timeout")
	// ErrRefused: the upstream answered with a client error other than 404
	// (401, 403, ...), which retrying does not fix.
	ErrRefused = errors.New("upstream: refused")
	// ErrTooLarge: the response body is longer than Request.MaxBytes
	// allows (decoded, or as sent on the wire); returned by Get or by the
	// body's Read.
	ErrTooLarge = errors.New("upstream: response too large")
)

// Config configures a Client. Zero values take the defaults.
type Config struct {
	// AttemptTimeout bounds one attempt until the response headers. Default 30 s.
	AttemptTimeout time.Duration
	// Retries after the first attempt. Default 3.
	Retries int
	// Backoff is the first retry delay, doubled per retry up to MaxBackoff.
	// Default 250 ms, max 5 s.
	Backoff, MaxBackoff time.Duration
	// Transport overrides the HTTP transport (tests).
	Transport http.RoundTripper
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Restricted is where fetches marked Request.Restricted (made for
	// callers who are not server owners) may connect. Nil: DefaultRestricted.
	Restricted *Networks
	// Redirects is the redirect policy of every fetch. Default
	// RedirectSameRules. Credentials are only ever sent to the first
	// request's exact origin.
	Redirects RedirectPolicy
	// Observe, if set, is told the outcome of every Get: "ok",
	// "not_modified", "not_found" or "error".
	Observe func(outcome string)
}

// Client fetches from upstream channels. Safe for concurrent use.
type Client struct {
	cfg Config
	hc  *http.Client
	// hr makes restricted fetches: its own transport, so a restricted fetch
	// never reuses a connection an unrestricted one opened.
	hr  *http.Client
	log *slog.Logger
}

// New returns a client.
func New(cfg Config) *Client {
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = 30 * time.Second
	}
	if cfg.Retries == 0 {
		cfg.Retries = 3
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Restricted == nil {
		r := DefaultRestricted()
		cfg.Restricted = &r
	}
	if cfg.Redirects == "" {
		cfg.Redirects = RedirectSameRules
	}
	tr, rtr := cfg.Transport, cfg.Transport
	if tr == nil {
		tr = newTransport(cfg.AttemptTimeout, nil)
		rtr = newTransport(cfg.AttemptTimeout, cfg.Restricted)
	}
	return &Client{cfg: cfg,
		hc:  &http.Client{Transport: guardTransport{tr, cfg.AttemptTimeout}, CheckRedirect: cfg.Redirects.checkRedirect},
		hr:  &http.Client{Transport: guardTransport{rtr, cfg.AttemptTimeout}, CheckRedirect: cfg.Redirects.checkRedirect},
		log: cfg.Logger.With("component", "upstream")}
}

// guardTransport puts every response body under a stallGuard, net/http's
// own reads included: the client drains a redirect's body inside Do,
// where the guard attempt puts on the final body does not run yet.
type guardTransport struct {
	rt   http.RoundTripper
	idle time.Duration
}

func (g guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := g.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = newStallGuard(resp.Body, g.idle, cancel)
	return resp, nil
}

// NewHTTPClient returns a plain HTTP client for server-side calls outside
// channel fetches (the mirror registry's checks), under the same redirect
// and credential rules; restricted confines it to nets.
func NewHTTPClient(timeout time.Duration, nets *Networks, redirects RedirectPolicy) *http.Client {
	if redirects == "" {
		redirects = RedirectSameRules
	}
	return &http.Client{Timeout: timeout, Transport: newTransport(timeout, nets), CheckRedirect: redirects.checkRedirect}
}

func newTransport(timeout time.Duration, nets *Networks) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 32
	t.ResponseHeaderTimeout = timeout
	if nets != nil {
		d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: nets.control}
		t.DialContext = d.DialContext
		t.Proxy = nil // a proxy would dial for us, past the check
	}
	return t
}

// Request is one upstream GET.
type Request struct {
	URL string
	// Authorization, if set, is sent as the Authorization header.
	Authorization string
	// Restricted confines the fetch to Config.Restricted and keeps what
	// answered out of its errors (it is made for a caller who is not a
	// server owner, who must not learn the node's network from it).
	Restricted bool
	// Validators of a cached copy, for a conditional request.
	IfNoneMatch, IfModifiedSince string
	// MaxBytes, if > 0, bounds the body: its decoded length, and the bytes
	// received on the wire (a gzip body may take wireAllowance(MaxBytes)).
	// Past either, the body's Read fails with ErrTooLarge; a Content-Length
	// beyond it fails Get at once.
	MaxBytes int64
}

// Response is a 200 (Body set, must be closed) or a 304 (NotModified).
type Response struct {
	NotModified   bool
	Body          io.ReadCloser
	ContentLength int64
	ETag          string
	LastModified  string
}

// Get fetches a file. It retries transport errors, 429 and 5xx with
// exponential backoff and jitter, and maps the outcome onto the package's
// errors; every error names the URL with its secrets redacted.
func (c *Client) Get(ctx context.Context, r Request) (*Response, error) {
	resp, err := c.get(ctx, r)
	if err != nil && r.Restricted {
		err = vague(err)
	}
	if c.cfg.Observe != nil {
		switch {
		case err == nil && resp.NotModified:
			c.cfg.Observe("not_modified")
		case err == nil:
			c.cfg.Observe("ok")
		case errors.Is(err, ErrNotFound):
			c.cfg.Observe("not_found")
		default:
			c.cfg.Observe("error")
		}
	}
	return resp, err
}

func (c *Client) get(ctx context.Context, r Request) (*Response, error) {
	u, err := url.Parse(r.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%w: bad upstream URL %s", ErrRefused, Redact(r.URL))
	}
	var last error
	delay := c.cfg.Backoff
	for attempt := 0; attempt <= c.cfg.Retries; attempt++ {
		if attempt > 0 {
			c.log.Debug("retrying upstream", "url", Redact(r.URL), "attempt", attempt, "err", last)
			t := time.NewTimer(delay/2 + rand.N(delay/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			delay = min(2*delay, c.cfg.MaxBackoff)
		}
		resp, retry, err := c.attempt(ctx, r)
		if err == nil {
			return resp, nil
		}
		last = err
		if !retry || ctx.Err() != nil {
			break
		}
	}
	return nil, last
}

// attempt makes one request. Every response body is under the silence
// bound of guardTransport (AttemptTimeout), so neither the caller's reads
// nor the drain of an error answer wait on a silent upstream for ever.
func (c *Client) attempt(ctx context.Context, r Request) (*Response, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return nil, false, fmt.Errorf("%w: %s: %v", ErrRefused, Redact(r.URL), redactErr(err))
	}
	req.Header.Set("User-Agent", "condamesh")
	// Asked for here, gzip is not decoded by the transport but by Body,
	// which counts the bytes on the wire too (see Request.MaxBytes).
	req.Header.Set("Accept-Encoding", "gzip")
	if r.Authorization != "" {
		req.Header.Set("Authorization", r.Authorization)
	}
	if r.IfNoneMatch != "" {
		req.Header.Set("If-None-Match", r.IfNoneMatch)
	}
	if r.IfModifiedSince != "" {
		req.Header.Set("If-Modified-Since", r.IfModifiedSince)
	}
	hc := c.hc
	if r.Restricted {
		hc = c.hr
	}
	resp, err := hc.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) || errors.Is(err, ErrRefused) {
			return nil, false, fmt.Errorf("%w: %s: %w", ErrRefused, Redact(r.URL), redactErr(err))
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, true, fmt.Errorf("%w: %s: %v", ErrTimeout, Redact(r.URL), redactErr(err))
		}
		return nil, true, fmt.Errorf("%w: %s: %v", ErrUnavailable, Redact(r.URL), redactErr(err))
	}
	out := &Response{ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), ContentLength: resp.ContentLength}
	switch {
	case resp.StatusCode == http.StatusOK:
		gz := strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip")
		if r.MaxBytes > 0 && !gz && resp.ContentLength > r.MaxBytes {
			resp.Body.Close()
			return nil, false, fmt.Errorf("%w: %s: %d bytes, more than %d", ErrTooLarge, Redact(r.URL), resp.ContentLength, r.MaxBytes)
		}
		out.Body = newBody(resp.Body, gz, r.MaxBytes, Redact(r.URL))
		if gz {
			out.ContentLength = -1
		}
		return out, false, nil
	case resp.StatusCode == http.StatusNotModified:
		resp.Body.Close()
		out.NotModified = true
		return out, false, nil
	}
	// The drain (for the connection's reuse) is under guardTransport's
	// silence bound too: an error answer that never ends does not hold Get.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	status := strconv.Itoa(resp.StatusCode)
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, false, fmt.Errorf("%w: %s answered %s", ErrNotFound, Redact(r.URL), status)
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, true, fmt.Errorf("%w: %s answered %s", ErrUnavailable, Redact(r.URL), status)
	}
	return nil, false, fmt.Errorf("%w: %s answered %s", ErrRefused, Redact(r.URL), status)
}

// vague keeps only the kind of a restricted fetch's error: not found, or
// could not be fetched. Whether a port was closed, filtered, refused or
// answered something else is not told.
func vague(err error) error {
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("%w: the remote server has no such file", ErrNotFound)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("%w: the remote server could not be reached or refused the request", ErrUnavailable)
}

// Redact hides credentials in a URL (secret.URL: user info, /t/<token>/
// segments, query strings), for errors and logs.
func Redact(raw string) string { return secret.URL(raw) }

// redactErr strips URLs from transport errors (url.Error repeats the URL).
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Join appends a channel-relative path to an upstream channel URL. path is
// decoded (as a request path is after routing): each of its segments is
// escaped, so that "?", "#", "%" or an escaped "/" in it stay part of the
// one segment they are in.
func Join(base, path string) string {
	for len(base) > 0 && base[len(base)-1] == '/' {
		base = base[:len(base)-1]
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return base + "/" + strings.Join(segs, "/")
}
