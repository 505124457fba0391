// Command condamesh-forge writes a deterministic conda channel shaped like
// conda-forge (package forgegen) into a directory, for nginx to serve as
// the upstream of conda-forge-scale tests and benchmarks:
//
//	condamesh-forge --out /srv/forge --records 500000 --noarch-records 100000 --seed 1
//
// The same flags give the same bytes. --real writes real package files for
// a few names; --change subdir/k writes the variant with record k changed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/condamesh/condamesh/conda/forgegen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the exit code: 0 success, 1
// failure, 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("condamesh-forge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "output directory (the channel root: <out>/<subdir>/repodata.json)")
	records := fs.Int("records", 500000, "records in each arch subdir")
	noarch := fs.Int("noarch-records", 100000, "records in noarch")
	names := fs.Int("names", 0, "names over arch and noarch (0: one per 20 records)")
	seed := fs.Uint64("seed", 1, "seed: the same flags and seed give the same bytes")
	subdirs := fs.String("subdirs", "linux-64", "arch subdirs, comma-separated (noarch is always written)")
	real := fs.String("real", "", "names whose records are real package files, comma-separated")
	change := fs.String("change", "", "alter one record: subdir/k, k counting the subdir's records in name order")
	shards := fs.Bool("shards", false, "also write each subdir's sharded repodata (CEP-16), as conda-forge publishes it")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: condamesh-forge --out DIR [--records N] [--noarch-records N] [--names N] [--seed S] [--subdirs a,b] [--real n1,n2] [--change subdir/k] [--shards]")
		return 2
	}
	cfg := forgegen.Config{Seed: *seed, Records: *records, NoarchRecords: *noarch, Names: *names, Subdirs: split(*subdirs), Real: split(*real)}
	if *change != "" {
		sd, k, ok := strings.Cut(*change, "/")
		i, err := strconv.Atoi(k)
		if !ok || err != nil {
			fmt.Fprintf(stderr, "--change %q: want subdir/k\n", *change)
			return 2
		}
		cfg.Change = &forgegen.Change{Subdir: sd, Index: i}
	}
	start := time.Now()
	ch, err := forgegen.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 2
	}
	stats, err := ch.WriteDir(ctx, *out)
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	for _, st := range stats {
		fmt.Fprintf(stdout, "%s: %d records, %d names, %d bytes, %d package files\n", st.Subdir, st.Records, len(ch.Names(st.Subdir)), st.Bytes, st.Packages)
		if *shards {
			n, err := ch.WriteShards(ctx, *out, st.Subdir)
			if err != nil {
				fmt.Fprintln(stderr, "error:", err)
				return 1
			}
			fmt.Fprintf(stdout, "%s: %d shards\n", st.Subdir, n)
		}
	}
	fmt.Fprintf(stdout, "written in %v\n", time.Since(start).Round(time.Millisecond))
	return 0
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
