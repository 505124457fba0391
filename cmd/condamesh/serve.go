package main

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/proxy"
	"github.com/condamesh/condamesh/upstream"
	"github.com/spf13/cobra"
)

func newServe() *cobra.Command {
	cfg := node.DefaultConfig()
	var logLevel, logFormat string
	var quota int64
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a node (first run: a single-node cluster with an admin user)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel, logFormat)
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			cfg.AdminKey = os.Getenv("CONDAMESH_ADMIN_KEY")
			cfg.API.DefaultChannelQuota = quota
			ctx := cmd.Context()
			n, err := node.New(ctx, cfg)
			if err != nil {
				return err
			}
			runErr := make(chan error, 1)
			go func() { runErr <- n.Run(ctx) }()
			key, created, err := n.EnsureAdmin(ctx)
			if err != nil {
				<-runErr
				return err
			}
			if created {
				fmt.Fprintf(cmd.OutOrStdout(), "Created user \"admin\" (server owner). Its API key is shown only now:\n\n    %s\n\nUse it with --api-key or CONDAMESH_API_KEY.\n", key)
			}
			if len(cfg.Join) > 0 || cfg.NoBootstrap {
				fmt.Fprintf(cmd.OutOrStdout(), "condamesh node %s joining a cluster (gossip %s; peers %s)\n", n.ID(), n.Addrs().Gossip, strings.Join(cfg.Join, ","))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "condamesh serving on %s (conda channels at %s/get/<channel>)\n", n.URL(), n.URL())
			return <-runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP listen address (REST, Connect, /get)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft listen address")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "gossip (memberlist) listen address")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "host peers reach this node at, for listeners bound to 0.0.0.0 or :: (default: the first private IPv4 address)")
	f.StringVar(&cfg.AdvertiseHTTP, "advertise-http", "", "base URL peers reach the HTTP listener at (default http://<advertise host>:<http port>)")
	f.StringVar(&cfg.AdvertiseRaft, "advertise-raft", "", "host:port peers reach Raft at (default <advertise host>:<raft port>)")
	f.StringVar(&cfg.AdvertiseGossip, "advertise-gossip", "", "host:port peers reach gossip at (default <advertise host>:<gossip port>)")
	f.StringSliceVar(&cfg.Join, "join", nil, "gossip addresses host:port of cluster members to join (comma-separated; retried until one answers); needs an empty data directory on first start")
	f.BoolVar(&cfg.NoBootstrap, "no-bootstrap", false, "on a data directory without cluster state, wait to be joined (`condamesh node join` on a member) instead of bootstrapping a single-node cluster")
	f.BoolVar(&cfg.Wipe, "wipe", false, "with --join or --no-bootstrap: delete the data directory's store and Raft state first (a node of another cluster joining this one)")
	var gossipKeys []string
	f.StringSliceVar(&gossipKeys, "gossip-key", nil, "base64 gossip encryption keys (16, 24 or 32 bytes; `openssl rand -base64 32`): the first encrypts, all decrypt; rotate with rolling restarts: old,new then new,old then new (prefer the env twin CONDAMESH_GOSSIP_KEY)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate (and intermediates) of this node: HTTPS on --http-addr (the lean HTTP loop is off), TLS for Raft and node-to-node calls; read at start (restart to rotate)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&cfg.TLSCAFile, "tls-ca", "", "PEM CA certificates that verify the other nodes (default: the system pool); makes Raft and node-to-node calls mutual TLS (the node's certificate needs serverAuth and clientAuth usages); API clients need no certificate")
	f.StringVar(&cfg.Site, "site", "", "name of this node's site (at most 64 characters)")
	f.IntVar(&cfg.Voters, "voters", 3, "Raft voters the cluster aims for (3 or 5); further nodes are non-voters")
	f.DurationVar(&cfg.RaftTimeout, "raft-timeout", cfg.RaftTimeout, "Raft heartbeat and election timeout (leader lease: half); failover takes about one to two of these; raise it above 10x the round trip between sites")
	f.BoolVar(&cfg.NonVoter, "non-voter", false, "never make this node a Raft voter")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this address (loopback only: no authentication)")
	f.IntVar(&cfg.MaxConns, "max-conns", cfg.MaxConns, "most HTTP connections open at once (more are closed at accept)")
	f.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", cfg.MaxConnsPerIP, "most HTTP connections open at once from one client address (-1: no such cap)")
	f.Int64Var(&cfg.API.BodyMinRate, "body-min-rate", 4<<10, "slowest average rate of a request body in bytes/s after --body-grace (-1: no bound)")
	f.DurationVar(&cfg.API.BodyGrace, "body-grace", 30*time.Second, "time a request body has before --body-min-rate counts")
	f.StringVar(&cfg.KeySecretFile, "api-key-secret-file", "", "file holding the secret that keys stored API key hashes, created if missing; the same on every node (default <data-dir>/api-key-secret)")
	f.StringVar(&cfg.API.MetricsToken, "metrics-token", "", "scrape token of /metrics: with it (Authorization: Bearer) private channels' series are shown, without it summed under channel=\"_private\" (prefer the env twin CONDAMESH_METRICS_TOKEN)")
	f.IntVar(&cfg.API.Bzip2Workers, "bzip2-workers", 0, "goroutines decoding the blocks of an uploaded .tar.bz2 while it is checked (0: one per CPU; 1: sequential, the parallel decoder off)")
	f.Int64Var(&quota, "channel-quota", 0, "default size limit in bytes of new channels (0: none)")
	f.Int64Var(&cfg.Proxy.MaxIndexSize, "max-upstream-index-size", proxy.DefaultMaxIndexSize, "largest upstream index file (repodata.json) a proxy or mirror channel reads, in bytes, decoded and on the wire")
	f.DurationVar(&cfg.Jobs.ProgressInterval, "job-progress-interval", 2*time.Second, "least time between two replicated progress writes of a running job's task (the last is written when it ends)")
	f.IntVar(&cfg.Jobs.TaskErrors, "task-errors", 100, "errors a job's task record keeps (the rest are counted, and all are in <data-dir>/task-errors/task-<id>.log on the node that ran it); -1: none")
	var clockOffset time.Duration
	f.DurationVar(&clockOffset, "clock-offset", 0, "shift this node's clock for download timestamps and metrics windows (testing, replays)")
	f.IntVar(&cfg.Proxy.ScanWorkers, "scan-workers", 0, "goroutines transcoding the records of an upstream repodata.json a proxy channel derives its shards from (0: one per CPU; 1: on the scanning goroutine)")
	var scanWhileFetching bool
	f.BoolVar(&scanWhileFetching, "scan-while-fetching", true, "scan a proxy channel's upstream repodata.json for its derived files while it downloads (false: once it is stored)")
	var countDownloads, leanHTTP bool
	f.BoolVar(&countDownloads, "count-downloads", true, "count package downloads for the metrics API")
	f.BoolVar(&leanHTTP, "lean-http", true, "answer conda clients' GET/HEAD /get requests on the lean HTTP/1.1 loop (false: net/http serves everything; always off with --tls-cert)")
	var fetchAllow, fetchDeny, redirects string
	def := upstream.DefaultRestricted()
	f.StringVar(&fetchAllow, "fetch-allow", "", "networks (CIDRs, comma-separated) that server-side fetches for callers who are not server owners may reach (empty: all but --fetch-deny)")
	f.StringVar(&fetchDeny, "fetch-deny", prefixList(def.Deny), "networks those fetches may not reach (the node's own addresses are always refused)")
	f.StringVar(&redirects, "redirects", string(upstream.RedirectSameRules), "upstream redirects followed: same-rules (public, or the first host's address class), any, none")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		allow, err := upstream.ParsePrefixes(fetchAllow)
		if err != nil {
			return usageError{fmt.Errorf("--fetch-allow: %w", err)}
		}
		deny, err := upstream.ParsePrefixes(fetchDeny)
		if err != nil {
			return usageError{fmt.Errorf("--fetch-deny: %w", err)}
		}
		cfg.FetchNetworks = &upstream.Networks{Allow: allow, Deny: deny, DenyOwn: true}
		cfg.Redirects = upstream.RedirectPolicy(redirects)
		if err := cfg.Redirects.Validate(); err != nil {
			return usageError{err}
		}
		for _, k := range gossipKeys {
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k))
			if err != nil {
				return usageError{fmt.Errorf("--gossip-key: not base64: %w", err)}
			}
			cfg.GossipKeys = append(cfg.GossipKeys, b)
		}
		cfg.NoDownloadCounting = !countDownloads
		cfg.NoLeanHTTP = !leanHTTP
		cfg.Proxy.NoScanWhileFetching = !scanWhileFetching
		if clockOffset != 0 {
			cfg.API.Now = func() time.Time { return time.Now().Add(clockOffset) }
		}
		return nil
	}
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
}

func prefixList(ps []netip.Prefix) string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return strings.Join(out, ",")
}

func newLogger(w interface{ Write([]byte) (int, error) }, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
