package main

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

// newMetrics is `condamesh metrics CHANNEL`: download counts per file and
// period, or with --by-mirror, where the channel's downloads happen; -o json
// prints the REST route's answer as it came.
func newMetrics() *cobra.Command {
	var c conn
	var out output
	var byMirror bool
	var period, start, end, platform string
	cmd := &cobra.Command{
		Use: "metrics CHANNEL", Short: "Show a channel's download counts", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/metrics/channels/" + url.PathEscape(args[0])
			q := url.Values{"period": {period}}
			for k, v := range map[string]string{"start": start, "end": end, "platform": platform} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if byMirror {
				path += "/mirrors"
			} else {
				path += "?" + q.Encode()
			}
			if out.isJSON() {
				return c.printREST(cmd, path)
			}
			base, err := c.base()
			if err != nil {
				return err
			}
			hc := c.http()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			defer tw.Flush()
			if byMirror {
				var by struct {
					Total   int64 `json:"total"`
					Local   int64 `json:"local"`
					Mirrors []struct {
						URL   string `json:"url"`
						Total int64  `json:"total"`
					} `json:"mirrors"`
				}
				if err := callJSON(cmd.Context(), hc, http.MethodGet, base+path, nil, &by); err != nil {
					return err
				}
				fmt.Fprintln(tw, "WHERE\tDOWNLOADS")
				fmt.Fprintf(tw, "this server\t%d\n", by.Local)
				for _, m := range by.Mirrors {
					fmt.Fprintf(tw, "%s\t%d\n", m.URL, m.Total)
				}
				fmt.Fprintf(tw, "total\t%d\n", by.Total)
				return nil
			}
			var res struct {
				Packages map[string]struct {
					Series []struct {
						Timestamp string `json:"timestamp"`
						Count     int64  `json:"count"`
					} `json:"series"`
				} `json:"packages"`
			}
			if err := callJSON(cmd.Context(), hc, http.MethodGet, base+path, nil, &res); err != nil {
				return err
			}
			files := make([]string, 0, len(res.Packages))
			for f := range res.Packages {
				files = append(files, f)
			}
			sort.Strings(files)
			fmt.Fprintln(tw, "FILE\tPERIOD START\tDOWNLOADS")
			for _, f := range files {
				for _, p := range res.Packages[f].Series {
					fmt.Fprintf(tw, "%s\t%s\t%d\n", f, p.Timestamp, p.Count)
				}
			}
			return nil
		},
	}
	c.flags(cmd)
	out.addFlag(cmd)
	cmd.Flags().BoolVar(&byMirror, "by-mirror", false, "all-time downloads per registered mirror and on this server")
	cmd.Flags().StringVar(&period, "period", "D", "H, D, M or Y")
	cmd.Flags().StringVar(&start, "start", "", "first period (naive UTC, e.g. 2026-01-01T00:00)")
	cmd.Flags().StringVar(&end, "end", "", "end (exclusive)")
	cmd.Flags().StringVar(&platform, "platform", "", "only this subdir")
	return cmd
}
