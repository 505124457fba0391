package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/condamesh/condamesh/api"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// newChannelSync is `condamesh channel sync NAME [--wait]`: it starts a
// mirror synchronisation (PUT /api/channels/NAME/actions) and, with --wait,
// follows the job's progress with a progress bar until it ends.
func newChannelSync(c *conn) *cobra.Command {
	var wait, archives, quiet bool
	cmd := &cobra.Command{
		Use: "sync NAME", Short: "Synchronise a mirror channel from its upstream", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := c.base()
			if err != nil {
				return err
			}
			action := "synchronize_repodata"
			if archives {
				action = "synchronize"
			}
			hc := c.http()
			var job struct {
				ID     int64  `json:"id"`
				Status string `json:"status"`
			}
			body, _ := json.Marshal(map[string]string{"action": action})
			if err := callJSON(cmd.Context(), hc, http.MethodPut, base+"/api/channels/"+url.PathEscape(args[0])+"/actions", body, &job); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "started job %d (%s)\n", job.ID, action)
			if !wait {
				return nil
			}
			return followJob(cmd.Context(), hc, base, job.ID, quiet, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job with a progress bar until it ends")
	cmd.Flags().BoolVar(&archives, "from-archives", false, "read every record from the downloaded archive (Quetz 'synchronize')")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress (a bar on a terminal, else a line every few seconds)")
	return cmd
}

// progressLineEvery spaces the progress lines of a job followed without a
// terminal.
const progressLineEvery = 5 * time.Second

// followJob polls the job's newest task until the job ends.
func followJob(ctx context.Context, hc *http.Client, base string, id int64, quiet bool, stdout, stderr io.Writer) error {
	var bar *progressbar.ProgressBar
	tty := isTerminal(stderr)
	var lastLine string
	var lastLineAt time.Time
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		var job struct {
			Status string `json:"status"`
		}
		if err := callJSON(ctx, hc, http.MethodGet, fmt.Sprintf("%s/api/jobs/%d", base, id), nil, &job); err != nil {
			return err
		}
		last, err := newestTask(ctx, hc, base, id)
		if err != nil {
			return err
		}
		if last != nil && last.Progress != nil && !quiet && !tty {
			p := last.Progress
			line := fmt.Sprintf("%d/%d files, %d/%d bytes", p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal)
			if line != lastLine && time.Since(lastLineAt) >= progressLineEvery {
				fmt.Fprintln(stderr, line)
				lastLine, lastLineAt = line, time.Now()
			}
		}
		if last != nil && last.Progress != nil && !quiet && tty {
			p := last.Progress
			if bar == nil && p.BytesTotal > 0 {
				bar = progressbar.NewOptions64(p.BytesTotal, progressbar.OptionSetWriter(stderr), progressbar.OptionShowBytes(true),
					progressbar.OptionSetWidth(30), progressbar.OptionShowCount(), progressbar.OptionThrottle(200*time.Millisecond))
			}
			if bar != nil {
				bar.Describe(fmt.Sprintf("%d/%d files", p.FilesDone, p.FilesTotal))
				_ = bar.Set64(p.BytesDone)
			}
		}
		switch job.Status {
		case "success", "failed", "cancelled", "timeout":
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(stderr)
			}
			if last != nil && last.Progress != nil {
				p := last.Progress
				total := max(p.ErrorsTotal, int64(len(p.Errors)))
				fmt.Fprintf(stdout, "%d/%d files, %d bytes; %d errors\n", p.FilesDone, p.FilesTotal, p.BytesDone, total)
				for _, e := range p.Errors {
					fmt.Fprintln(stdout, "  error:", e)
				}
				if more := total - int64(len(p.Errors)); more > 0 {
					fmt.Fprintf(stdout, "  ... and %d more (all in task-errors/task-%d.log in the data directory of the node that ran the job)\n", more, last.ID)
				}
			}
			if job.Status != "success" {
				msg := ""
				if last != nil {
					msg = last.Message
				}
				return fmt.Errorf("job %d %s: %s", id, job.Status, msg)
			}
			fmt.Fprintf(stdout, "job %d succeeded\n", id)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// taskStatuses are the statuses of the tasks a followed job may have.
const taskStatuses = "status=created&status=pending&status=running&status=success&status=failed"

// newestTask returns a job's newest task (nil if it has none yet), paging
// the job's tasks as Quetz does: one request learns how many there are,
// one more reads the last, so the answers stay small however many tasks
// the job has.
func newestTask(ctx context.Context, hc *http.Client, base string, id int64) (*api.TaskJSON, error) {
	var page struct {
		Pagination struct {
			AllRecordsCount int `json:"all_records_count"`
		} `json:"pagination"`
		Result []api.TaskJSON `json:"result"`
	}
	get := func(skip int) error {
		return callJSON(ctx, hc, http.MethodGet, fmt.Sprintf("%s/api/jobs/%d/tasks?%s&skip=%d&limit=1", base, id, taskStatuses, skip), nil, &page)
	}
	if err := get(0); err != nil {
		return nil, err
	}
	if n := page.Pagination.AllRecordsCount; n > 1 {
		if err := get(n - 1); err != nil {
			return nil, err
		}
	}
	if len(page.Result) == 0 {
		return nil, nil
	}
	return &page.Result[len(page.Result)-1], nil
}

// maxAnswer bounds a JSON answer the CLI reads.
const maxAnswer = 8 << 20

// callJSON sends a REST request and decodes the JSON answer, turning
// {"detail": ...} errors into Go errors. An answer larger than maxAnswer
// is an error.
func callJSON(ctx context.Context, hc *http.Client, method, u string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if resp.StatusCode >= 300 {
		return apiError(resp, b)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	if len(b) > maxAnswer {
		return fmt.Errorf("%s %s: the answer is larger than %d MiB", method, u, maxAnswer>>20)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// apiError turns an error answer into an error naming the status and the
// server's {"detail": ...}.
func apiError(resp *http.Response, body []byte) error {
	var e struct {
		Detail any `json:"detail"`
	}
	if json.Unmarshal(body, &e) == nil && e.Detail != nil {
		return fmt.Errorf("%s: %v", resp.Status, e.Detail)
	}
	return fmt.Errorf("%s", resp.Status)
}
