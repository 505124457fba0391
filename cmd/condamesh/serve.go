package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/condamesh/condamesh/node"
	"github.com/condamesh/condamesh/proxy"
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
			fmt.Fprintf(cmd.OutOrStdout(), "condamesh serving on %s (conda channels at %s/get/<channel>)\n", n.URL(), n.URL())
			return <-runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "data directory")
	f.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "HTTP listen address (REST, Connect, /get)")
	f.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "Raft listen address")
	f.StringVar(&cfg.GossipAddr, "gossip-addr", cfg.GossipAddr, "gossip (memberlist) listen address")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) on this address (loopback only: no authentication)")
	f.Int64Var(&quota, "channel-quota", 0, "default size limit in bytes of new channels (0: none)")
	f.Int64Var(&cfg.Proxy.MaxIndexSize, "max-upstream-index-size", proxy.DefaultMaxIndexSize, "largest upstream index file (repodata.json) a proxy or mirror channel reads, in bytes, decoded and on the wire")
	var clockOffset time.Duration
	f.DurationVar(&clockOffset, "clock-offset", 0, "shift this node's clock for download timestamps and metrics windows (testing, replays)")
	var countDownloads bool
	f.BoolVar(&countDownloads, "count-downloads", true, "count package downloads for the metrics API")
	cmd.PreRun = func(*cobra.Command, []string) {
		cfg.NoDownloadCounting = !countDownloads
		if clockOffset != 0 {
			cfg.API.Now = func() time.Time { return time.Now().Add(clockOffset) }
		}
	}
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	return cmd
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
