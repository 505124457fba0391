package api

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/indexer"
	"github.com/condamesh/condamesh/internal/secret"
	"github.com/condamesh/condamesh/metrics"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/store"
	"github.com/condamesh/condamesh/upstream"
	"github.com/ipfs/go-cid"
)

// Proposer replicates a metadata command and returns its result.
type Proposer interface {
	Propose(ctx context.Context, cmd *v1.Command) (any, error)
}

// Blobs is the content-addressed store as the API uses it.
type Blobs interface {
	Put(ctx context.Context, r io.Reader, opt store.PutOptions) (store.BlobInfo, error)
	Open(ctx context.Context, c cid.Cid) (*store.Blob, error)
	Has(ctx context.Context, c cid.Cid) bool
}

// Indexes gives the published index files of channels.
type Indexes interface {
	File(ctx context.Context, ch, path string) (indexer.Published, error)
	Fresh(ctx context.Context, ch, subdir string) (bool, error)
	WaitFresh(ctx context.Context, ch, subdir string) error
}

// Proxies serves the files of proxy channels.
type Proxies interface {
	Get(ctx context.Context, ch *v1.Channel, path string) (proxy.Result, error)
	GetStreaming(ctx context.Context, ch *v1.Channel, path string, sink proxy.Sink) (proxy.Result, error)
	GetReady(ctx context.Context, ch *v1.Channel, path string) (proxy.Result, error)
}

// Jobs schedules the jobs the API creates.
type Jobs interface {
	Known(manifest string) bool
	Wake()
}

// Deps are the parts of a node the API uses.
type Deps struct {
	Catalog   *catalog.Catalog
	Proposer  Proposer
	Blobs     Blobs
	Indexes   Indexes
	Jobs      Jobs
	Proxies   Proxies
	Downloads Downloads
	// Prom, if set, receives request, download and proxy metrics and is
	// served at /metricsp and /metrics.
	Prom *metrics.Prom
	// Ready reports whether the node can serve (Raft has a leader and
	// this node has applied what it committed); it backs /health/ready.
	Ready func() bool
	// Cluster, if set, serves ClusterService and /api/cluster, and the
	// linearizable reads (?consistent=true); every write waits for its
	// read index too (waitsReadIndex).
	Cluster Cluster
	// Mounts are further handlers by path prefix (the node-to-node
	// PeerService), served outside the API's authentication.
	Mounts map[string]http.Handler
}

// Config configures the API. Zero values take the documented defaults.
type Config struct {
	// Logger receives request errors; nil means slog.Default().
	Logger *slog.Logger
	// MaxUploadSize bounds one uploaded package file. Default 20 GiB.
	MaxUploadSize int64
	// MaxUnpackedSize bounds what the tar streams of one uploaded package
	// decompress to while the whole archive is checked (a compression bomb
	// is refused once it has produced that much). Default 64 GiB
	// (conda.DefaultMaxUnpacked).
	MaxUnpackedSize int64
	// Bzip2Workers is how many goroutines decode the blocks of an uploaded
	// .tar.bz2 while it is checked (conda.VerifyOptions.Bzip2Workers): 1
	// decodes sequentially, zero means one per CPU; negative is invalid.
	Bzip2Workers int
	// IndexWait bounds how long a request for an index file waits for the
	// indexer to publish the latest change before serving the previous
	// version. Default 5 s.
	IndexWait time.Duration
	// DefaultChannelQuota, if > 0, is the size_limit of new channels that
	// do not set one (Quetz [quotas] channel_quota).
	DefaultChannelQuota int64
	// Now returns the current time; tests replace it.
	Now func() time.Time
	// BodyMinRate is the slowest average rate, in bytes per second, at
	// which a request body may arrive (after BodyGrace); a body that falls
	// behind is cut and answered 408. Default 4 KiB/s; negative: no bound.
	BodyMinRate int64
	// BodyGrace is the time a body has before the rate counts. Default 30 s.
	BodyGrace time.Duration
	// HTTPClient makes the calls to other servers of the mirror registry
	// for server owners. Default: 15 s timeout, upstream's redirect rules.
	HTTPClient *http.Client
	// RestrictedHTTPClient makes them for everyone else. Default: as
	// HTTPClient, confined to upstream.DefaultRestricted networks.
	RestrictedHTTPClient *http.Client
	// MetricsToken, if set, is the scrape token of /metrics and /metricsp:
	// a scraper sending "Authorization: Bearer <token>" (or an owner's or
	// maintainer's API key) sees private channels' series; everyone else
	// sees them summed under channel="_private". At least 16 characters.
	MetricsToken string
	// KeySecret keys the hash under which API keys are stored
	// (secret.KeyHasher); at least 16 bytes, the same on every node of a
	// cluster. The node reads it from its data directory. Empty: a random
	// one, so keys do not survive a restart (tests of this package only).
	KeySecret []byte
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MaxUploadSize == 0 {
		c.MaxUploadSize = 20 << 30
	}
	if c.MaxUnpackedSize == 0 {
		c.MaxUnpackedSize = conda.DefaultMaxUnpacked
	}
	if c.IndexWait == 0 {
		c.IndexWait = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.BodyMinRate == 0 {
		c.BodyMinRate = 4 << 10
	}
	if c.BodyGrace == 0 {
		c.BodyGrace = 30 * time.Second
	}
	if c.HTTPClient == nil {
		c.HTTPClient = upstream.NewHTTPClient(15*time.Second, nil, "")
	}
	if c.RestrictedHTTPClient == nil {
		nets := upstream.DefaultRestricted()
		c.RestrictedHTTPClient = upstream.NewHTTPClient(15*time.Second, &nets, "")
	}
	if len(c.KeySecret) == 0 {
		c.KeySecret = make([]byte, secret.KeySecretSize)
		_, _ = rand.Read(c.KeySecret)
	}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	var errs []error
	if len(c.KeySecret) != 0 && len(c.KeySecret) < 16 {
		errs = append(errs, fmt.Errorf("api: config: key secret of %d bytes, want at least 16", len(c.KeySecret)))
	}
	if c.Bzip2Workers < 0 {
		errs = append(errs, fmt.Errorf("api: config: %d bzip2 workers", c.Bzip2Workers))
	}
	if c.MetricsToken != "" && len(c.MetricsToken) < 16 {
		errs = append(errs, errors.New("api: config: metrics token shorter than 16 characters"))
	}
	return errors.Join(errs...)
}

// Server serves every HTTP route of a node.
type Server struct {
	cfg       Config
	log       *slog.Logger
	cat       *catalog.Catalog
	prop      Proposer
	blobs     Blobs
	idx       Indexes
	jobs      Jobs
	proxy     Proxies
	downloads Downloads
	prom      *metrics.Prom
	keys      *secret.KeyHasher
	ops       []operation
	mux       *http.ServeMux
	ready     func() bool
	cluster   Cluster
	mounts    map[string]http.Handler
	etags     textCache[cid.Cid]
	dates     textCache[int64]
	maxAges   textCache[int64]
}

// New returns the API server. cfg must pass Validate (the node checks it
// with its own configuration): an invalid one panics.
func New(cfg Config, d Deps) *Server {
	cfg.setDefaults()
	keys, err := secret.NewKeyHasher(cfg.KeySecret)
	if err != nil {
		panic(err)
	}
	s := &Server{cfg: cfg, keys: keys, log: cfg.Logger.With("component", "api"), cat: d.Catalog, prop: d.Proposer, blobs: d.Blobs, idx: d.Indexes, jobs: d.Jobs, proxy: d.Proxies, downloads: d.Downloads, prom: d.Prom, mux: http.NewServeMux(), ready: d.Ready, cluster: d.Cluster, mounts: d.Mounts}
	s.routes()
	return s
}

// ServeHTTP strips a leading /t/<token>/ (turning it into X-API-Key unless
// the request already has one), then dispatches.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if rest, ok := strings.CutPrefix(r.URL.Path, "/t/"); ok {
		token, path, found := strings.Cut(rest, "/")
		if found && token != "" {
			r = r.Clone(r.Context())
			r.URL.Path = "/" + path
			r.URL.RawPath = ""
			if r.Header.Get("X-API-Key") == "" {
				r.Header.Set("X-API-Key", token)
			}
		}
	}
	s.paceBody(w, r)
	if s.cluster != nil && s.waitsReadIndex(r) {
		if err := s.cluster.ReadIndex(r.Context()); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if s.prom == nil {
		s.dispatch(w, r)
		return
	}
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.prom.InFlight.Inc()
	defer s.prom.InFlight.Dec() // also when a handler aborts (panics)
	s.dispatch(sw, r)
	route := r.Pattern // set by dispatch or the mux on this request
	if route == "" {
		route = "unmatched"
	}
	s.prom.ObserveRequest(r.Method, route, sw.status, time.Since(start))
	if strings.HasPrefix(route, "GET /get/") && sw.status == http.StatusOK {
		s.prom.BytesServed.Add(float64(sw.written))
	}
}

// mounted reports a request for a mounted handler (node-to-node calls).
func (s *Server) mounted(r *http.Request) bool {
	for p := range s.mounts {
		if strings.HasPrefix(r.URL.Path, p) {
			return true
		}
	}
	return false
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// dispatch routes conda file requests (most of the traffic, their route
// known from the path alone) straight to their handler, and the rest
// through the mux. A path the mux would redirect or decode differently
// (unclean, or with escaped slashes) goes through the mux too.
func (s *Server) dispatch(w http.ResponseWriter, r *http.Request) {
	if channel, p, pattern, ok := getRoute(r); ok {
		r.Pattern = pattern
		s.serveChannelFile(w, r, channel, p)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// getRoute matches r against the /get routes as the mux would.
func getRoute(r *http.Request) (channel, p, pattern string, ok bool) {
	head := r.Method == http.MethodHead
	if (!head && r.Method != http.MethodGet) || r.URL.RawPath != "" {
		return "", "", "", false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/get/")
	if !ok || strings.Contains(rest, "//") || strings.Contains(rest, "/./") || strings.Contains(rest, "/../") ||
		strings.HasSuffix(rest, "/.") || strings.HasSuffix(rest, "/..") {
		return "", "", "", false
	}
	channel, p, sub := strings.Cut(rest, "/")
	if channel == "" || channel == "." || channel == ".." {
		return "", "", "", false
	}
	switch {
	case sub && head:
		pattern = "HEAD /get/{channel}/{path...}"
	case sub:
		pattern = "GET /get/{channel}/{path...}"
	case head:
		pattern = "HEAD /get/{channel}"
	default:
		pattern = "GET /get/{channel}"
	}
	return channel, p, pattern, true
}

// statusWriter records the status and body size of a response. It keeps
// io.ReaderFrom, so files are still sent with sendfile.
type statusWriter struct {
	http.ResponseWriter
	status  int
	written int64
	wrote   bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

func (w *statusWriter) ReadFrom(src io.Reader) (int64, error) {
	w.wrote = true
	n, err := io.Copy(w.ResponseWriter, src) // the server's ReadFrom: sendfile
	w.written += n
	return n, err
}

// Unwrap gives http.ResponseController the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// slashRedirect answers a path that only has a route with its trailing
// slash removed or added with a 307 to that route, as Quetz (Starlette's
// redirect_slashes) does.
// It runs only for requests no route matched (from the catch-alls), so
// routed requests are matched once.
func (s *Server) slashRedirect(w http.ResponseWriter, r *http.Request) bool {
	if len(r.URL.Path) <= 1 {
		return false
	}
	r2 := r.Clone(r.Context())
	if p, ok := strings.CutSuffix(r.URL.Path, "/"); ok {
		r2.URL.Path = p
	} else {
		r2.URL.Path = r.URL.Path + "/"
	}
	r2.URL.RawPath = ""
	if !s.routed(r2) {
		return false
	}
	u := *r.URL
	u.Path, u.RawPath = r2.URL.Path, ""
	http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	return true
}

// routed reports whether a real route (not a catch-all 404) serves r.
func (s *Server) routed(r *http.Request) bool {
	_, pattern := s.mux.Handler(r)
	return pattern != "" && pattern != apiNotFound && pattern != "/"
}

// apiNotFound is the catch-all pattern answering unknown /api routes.
const apiNotFound = "/api/"

func (s *Server) routes() {
	m := s.mux
	s.ops = []operation{
		{"GET /health/ready", "health", "Readiness: a leader is known and this node has applied what it committed", s.healthReady},
		{"GET /health/live", "health", "Liveness", s.healthLive},
		{"GET /api/cluster/nodes", "cluster", "List the cluster's nodes (server owner)", s.restClusterNodes},
		{"GET /api/cluster/status", "cluster", "This node's cluster status (server owner)", s.restClusterStatus},
		{"POST /api/cluster/join", "cluster", "Join this node and the cluster of the gossip peers given (server owner)", s.restClusterJoin},
		{"POST /api/cluster/leave", "cluster", "Leave the cluster gracefully, then stop this node (server owner)", s.restClusterLeave},
		{"DELETE /api/cluster/nodes/{id}", "cluster", "Remove a (dead) node from the cluster (server owner)", s.restClusterRemove},
		{"POST /api/channels", "channels", "Create a channel (local, proxy or mirror)", s.restCreateChannel},
		{"GET /api/channels", "channels", "List visible channels", s.restListChannels},
		{"GET /api/paginated/channels", "channels", "List visible channels, paginated", s.restListChannelsPaginated},
		{"GET /api/channels/search/{$}", "search", "Search visible channels (?q= words, NOT word, description:, private:)", s.restChannelSearch},
		{"GET /api/channels/{channel}", "channels", "Get a channel", s.restGetChannel},
		{"PATCH /api/channels/{channel}", "channels", "Change private, size_limit, ttl or metadata", s.restPatchChannel},
		{"DELETE /api/channels/{channel}", "channels", "Delete a channel and its packages", s.restDeleteChannel},
		{"GET /api/channels/{channel}/packages", "packages", "List packages", s.restListPackages},
		{"GET /api/paginated/channels/{channel}/packages", "packages", "List packages, paginated", s.restListPackagesPaginated},
		{"POST /api/channels/{channel}/packages", "packages", "Create an empty package", s.restCreatePackage},
		{"GET /api/channels/{channel}/packages/{package}", "packages", "Get a package", s.restGetPackage},
		{"DELETE /api/channels/{channel}/packages/{package}", "packages", "Delete a package and its files", s.restDeletePackage},
		{"GET /api/channels/{channel}/packages/{package}/versions", "packages", "List a package's files", s.restListVersions},
		{"GET /api/paginated/channels/{channel}/packages/{package}/versions", "packages", "List a package's files, paginated", s.restListVersionsPaginated},
		{"GET /api/packages/search/{$}", "search", "Search packages of visible channels (?q= words, NOT word, channel:, summary:, description:, platform:)", s.restPackageSearch},
		{"GET /api/channels/{channel}/packages/{package}/versions/{platform}/{filename}", "packages", "Get one package file's record", s.restGetVersion},
		{"DELETE /api/channels/{channel}/packages/{package}/versions/{platform}/{filename}", "packages", "Delete one package file", s.restDeleteVersion},
		{"POST /api/channels/{channel}/files/{$}", "upload", "Upload package files (multipart, parts named files)", s.restUploadFiles},
		{"POST /api/channels/{channel}/packages/{package}/files/{$}", "upload", "Upload files of one package (multipart)", s.restUploadPackageFiles},
		{"POST /api/channels/{channel}/upload/{filename}", "upload", "Upload one package file as the raw body (?sha256= required)", s.restUploadRaw},
		{"GET /api/channels/{channel}/members", "members", "List channel members", s.restListMembers},
		{"POST /api/channels/{channel}/members", "members", "Add or change a channel member", s.restAddMember},
		{"DELETE /api/channels/{channel}/members", "members", "Remove a channel member (?username=)", s.restRemoveMember},
		{"GET /api/channels/{channel}/packages/{package}/members", "members", "List package members", s.restListPackageMembers},
		{"POST /api/channels/{channel}/packages/{package}/members", "members", "Add a package member", s.restAddPackageMember},
		{"GET /api/api-keys", "api-keys", "List your API keys", s.restListKeys},
		{"POST /api/api-keys", "api-keys", "Create an API key (optionally scoped by roles)", s.restCreateKey},
		{"DELETE /api/api-keys/{key}", "api-keys", "Delete an API key", s.restDeleteKey},
		{"GET /api/me", "users", "Who am I", s.restMe},
		{"POST /api/users", "users", "Create a user with a server role and an initial key (condamesh)", s.restCreateUser},
		{"GET /api/users", "users", "List users (elevated: all; others: themselves) (?q=)", s.restListUsers},
		{"GET /api/paginated/users", "users", "List users, paginated", s.restListUsersPaginated},
		{"GET /api/users/{username}", "users", "Get a user", s.restGetUser},
		{"GET /api/users/{username}/channels", "users", "A user's channel roles", s.restUserChannels},
		{"GET /api/paginated/users/{username}/channels", "users", "A user's channel roles, paginated", s.restUserChannelsPaginated},
		{"GET /api/users/{username}/packages", "users", "A user's package roles", s.restUserPackages},
		{"GET /api/paginated/users/{username}/packages", "users", "A user's package roles, paginated", s.restUserPackagesPaginated},
		{"GET /api/users/{username}/role", "users", "Get a user's server role", s.restGetUserRole},
		{"PUT /api/users/{username}/role", "users", "Set a user's server role", s.restSetUserRole},
		{"PUT /api/channels/{channel}/actions", "jobs", "Run a channel action as a job", s.restChannelAction},
		{"GET /api/channels/{channel}/mirrors", "mirrors", "List the mirrors registered with a channel", s.restListMirrors},
		{"POST /api/channels/{channel}/mirrors", "mirrors", "Register a mirror (checked by calling its API)", s.restAddMirror},
		{"DELETE /api/channels/{channel}/mirrors/{id}", "mirrors", "Unregister a mirror", s.restDeleteMirror},
		{"GET /api/channels/{channel}/mirrors/config", "mirrors", "Client configuration listing the mirrors, then this server (?client=pixi|mamba|conda|json)", s.restMirrorConfig},
		{"GET /api/jobs", "jobs", "List jobs (?status= repeated)", s.restListJobs},
		{"POST /api/jobs", "jobs", "Create a job", s.restCreateJob},
		{"GET /api/jobs/{id}", "jobs", "Get a job", s.restGetJob},
		{"PATCH /api/jobs/{id}", "jobs", "Change a job's status", s.restPatchJob},
		{"GET /api/jobs/{id}/tasks", "jobs", "List a job's tasks", s.restListTasks},
		{"GET /metrics/channels/{channel}", "metrics", "Download counts of a channel's files", s.restChannelMetrics},
		{"GET /metrics/channels/{channel}/mirrors", "metrics", "All-time downloads per registered mirror and on this server", s.restMirrorMetrics},
		{"GET /metrics/channels/{channel}/packages/{package}/versions/{platform}/{filename}", "metrics", "Download counts of one file", s.restVersionMetrics},
		{"GET /get/{channel}", "conda", "Channel index page", s.serveGet},
		{"HEAD /get/{channel}", "conda", "Channel index page (headers)", s.serveGet},
		{"GET /get/{channel}/{path...}", "conda", "Conda channel files: repodata, shards, packages", s.serveGet},
		{"HEAD /get/{channel}/{path...}", "conda", "Conda channel files (headers)", s.serveGet},
	}
	for _, op := range s.ops {
		m.HandleFunc(op.pattern, op.handler)
	}
	m.HandleFunc("GET /openapi.json", s.openAPI)
	if s.prom != nil {
		h := s.prom.Handler(s.fullMetrics, s.privateChannel)
		m.Handle("GET /metricsp", h) // Quetz's path
		m.Handle("GET /metrics", h)
	}
	m.HandleFunc("GET /docs", s.swaggerUI)
	for path, h := range s.mounts {
		m.Handle(path, h)
	}

	s.connectRoutes()

	// Unknown /api routes: JSON 404 like Quetz; elsewhere a plain 404.
	m.HandleFunc(apiNotFound, s.apiUnknown)
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if !s.slashRedirect(w, r) {
			http.NotFound(w, r)
		}
	})
}

// apiUnknown answers a request no /api route serves: 405 if the path
// exists for another method, else 404, like Quetz.
func (s *Server) apiUnknown(w http.ResponseWriter, r *http.Request) {
	if s.slashRedirect(w, r) {
		return
	}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if m != r.Method && s.routed(r2) {
			s.writeError(w, r, apiErr(ErrNotAllowed, "Method Not Allowed"))
			return
		}
	}
	s.writeError(w, r, apiErr(ErrNotFound, "Not Found"))
}

// fullMetrics reports whether a scrape may see private channels' series:
// it carries the scrape token, or an owner's or maintainer's API key.
func (s *Server) fullMetrics(r *http.Request) bool {
	if tok := s.cfg.MetricsToken; tok != "" {
		if got, ok := strings.CutPrefix(headerValue(r.Header, "Authorization"), "Bearer "); ok &&
			subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(tok)) == 1 {
			return true
		}
	}
	id, err := s.identify(r.Context(), r.Header)
	return err == nil && id.elevated()
}

// privateChannel reports whether metrics must hide a channel: private, or
// no longer known (it may have been private).
func (s *Server) privateChannel(ctx context.Context, name string) bool {
	ch, err := s.cat.ChannelView(ctx, name)
	return err != nil || ch.Private
}

func (s *Server) healthLive(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"component": "http-server", "status": "ok"})
}

func (s *Server) healthReady(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil && !s.ready() {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"component": "http-server", "status": "not ready"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"component": "http-server", "status": "ok"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"detail":"Internal Server Error"}`, http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers err as {"detail": ...} with its status, and logs
// internal errors once.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, _, detail := classify(err)
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", secret.URL(r.URL.Path), "err", secret.Err(err))
	} else {
		s.log.Debug("request refused", "method", r.Method, "path", secret.URL(r.URL.Path), "status", status, "err", refusal(err))
	}
	writeJSON(w, status, map[string]any{"detail": detail})
}

// refusal is what the log says of a refused request: a validation error's
// fields and types, never the input it quotes back to its caller (a body
// that may hold credentials); other errors with their secrets masked.
func refusal(err error) any {
	var ae *Error
	if errors.As(err, &ae) {
		if fes, ok := ae.Detail.([]fieldError); ok {
			out := make([]string, len(fes))
			for i, fe := range fes {
				out[i] = fmt.Sprintf("%v: %s", fe.Loc, fe.Type)
			}
			return strings.Join(out, "; ")
		}
	}
	return secret.Err(err)
}
