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
// follows the job until it ends (see followJob for what it prints).
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
			if !quiet {
				fmt.Fprintf(cmd.OutOrStdout(), "started job %d (%s)\n", job.ID, action)
			}
			if !wait {
				return nil
			}
			return followJob(cmd.Context(), hc, base, job.ID, quiet, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the job until it ends: a progress bar on a terminal, else a line per file")
	cmd.Flags().BoolVar(&archives, "from-archives", false, "read every record from the downloaded archive (Quetz 'synchronize')")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success (errors still go to stderr)")
	return cmd
}

// jobEnded reports whether a job or task status is final.
func jobEnded(status string) bool {
	switch status {
	case "success", "failed", "cancelled", "timeout", "skipped":
		return true
	}
	return false
}

// followJob polls a job until it ends and prints what its task records
// report. On a terminal (stderr) it draws a progress bar of the newest
// task, then a summary. Otherwise (piped or logged) it prints lines, each
// once: a line per file that failed (the errors the records keep), a line
// each time a running task's record reports more files done (records are
// written at most every --job-progress-interval, so a line may stand for
// several files), a line per task that ends, then the summary. With quiet
// it prints only the failures (files, tasks), on stderr. It returns an error unless the
// job succeeded.
func followJob(ctx context.Context, hc *http.Client, base string, id int64, quiet bool, stdout, stderr io.Writer) error {
	tty := !quiet && isTerminal(stderr)
	var bar *progressbar.ProgressBar
	f := &taskFollower{hc: hc, base: base, job: id, lines: !quiet && !tty, out: stdout, errs: stdout, seen: map[int64]*taskSeen{}}
	if quiet {
		f.errs = stderr
	}
	t := time.NewTicker(300 * time.Millisecond)
	defer t.Stop()
	for {
		var job struct {
			Status string `json:"status"`
		}
		if err := callJSON(ctx, hc, http.MethodGet, fmt.Sprintf("%s/api/jobs/%d", base, id), nil, &job); err != nil {
			return err
		}
		var last *api.TaskJSON
		var err error
		if tty {
			last, err = newestTask(ctx, hc, base, id)
		} else {
			last, err = f.poll(ctx)
		}
		if err != nil {
			return err
		}
		if tty && last != nil && last.Progress != nil {
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
		if jobEnded(job.Status) {
			if bar != nil {
				_ = bar.Finish()
				fmt.Fprintln(stderr)
			}
			if last != nil && last.Progress != nil {
				p := last.Progress
				total := max(p.ErrorsTotal, int64(len(p.Errors)))
				if !quiet {
					fmt.Fprintf(stdout, "%d/%d files, %d bytes; %d errors\n", p.FilesDone, p.FilesTotal, p.BytesDone, total)
				}
				if tty {
					for _, e := range p.Errors {
						fmt.Fprintln(stdout, "  error:", e)
					}
				}
				if more := total - int64(len(p.Errors)); more > 0 {
					fmt.Fprintf(f.errs, "  ... and %d more (all in task-errors/task-%d.log in the data directory of the node that ran the job)\n", more, last.ID)
				}
			}
			if job.Status != "success" {
				msg := ""
				if last != nil {
					msg = last.Message
				}
				return fmt.Errorf("job %d %s: %s", id, job.Status, msg)
			}
			if !quiet {
				fmt.Fprintf(stdout, "job %d succeeded\n", id)
			}
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

// taskPage is how many tasks one request of a followed job's tasks asks
// for: a task record keeps at most 16 KiB of errors by default, so a page
// stays far below maxAnswer.
const taskPage = 20

// taskFollower prints the news of a job's task records once each, paging
// through the tasks from the first one not yet ended.
type taskFollower struct {
	hc        *http.Client
	base      string
	job       int64
	lines     bool      // print the lines of files done and of tasks that end
	out, errs io.Writer // lines; failed files
	next      int       // tasks before it have ended and are printed
	seen      map[int64]*taskSeen
	newest    *api.TaskJSON
}

// taskSeen is what was printed of a task.
type taskSeen struct {
	errors    int
	filesDone int64
	ended     bool
}

// poll reads the tasks from f.next on, prints what is new, and returns
// the job's newest task (nil while it has none).
func (f *taskFollower) poll(ctx context.Context) (*api.TaskJSON, error) {
	for skip, ended := f.next, true; ; {
		var page struct {
			Pagination struct {
				AllRecordsCount int `json:"all_records_count"`
			} `json:"pagination"`
			Result []api.TaskJSON `json:"result"`
		}
		if err := callJSON(ctx, f.hc, http.MethodGet, fmt.Sprintf("%s/api/jobs/%d/tasks?%s&skip=%d&limit=%d", f.base, f.job, taskStatuses, skip, taskPage), nil, &page); err != nil {
			return nil, err
		}
		for i := range page.Result {
			tk := &page.Result[i]
			f.print(tk)
			if ended = ended && jobEnded(tk.Status); ended {
				f.next = skip + i + 1
				delete(f.seen, tk.ID)
			}
			f.newest = tk
		}
		skip += len(page.Result)
		if len(page.Result) < taskPage || skip >= page.Pagination.AllRecordsCount {
			return f.newest, nil
		}
	}
}

// print prints what is new in a task's record.
func (f *taskFollower) print(tk *api.TaskJSON) {
	s := f.seen[tk.ID]
	if s == nil {
		s = &taskSeen{}
		f.seen[tk.ID] = s
	}
	if p := tk.Progress; p != nil {
		for _, e := range p.Errors[min(s.errors, len(p.Errors)):] {
			fmt.Fprintln(f.errs, "failed", e)
		}
		s.errors = max(s.errors, len(p.Errors))
		if f.lines && p.FilesDone > s.filesDone && !jobEnded(tk.Status) {
			fmt.Fprintf(f.out, "%d/%d files, %d/%d bytes, last %s\n", p.FilesDone, p.FilesTotal, p.BytesDone, p.BytesTotal, p.Current)
			s.filesDone = p.FilesDone
		}
	}
	if jobEnded(tk.Status) && !s.ended {
		s.ended = true
		w := f.out
		if tk.Status == "failed" {
			w = f.errs // with quiet too
		} else if !f.lines {
			return
		}
		line := fmt.Sprintf("task %d %s", tk.ID, tk.Status)
		if fn, _ := tk.PackageVersion["filename"].(string); fn != "" {
			platform, _ := tk.PackageVersion["platform"].(string)
			line += " " + platform + "/" + fn
		}
		if tk.Message != "" {
			line += ": " + tk.Message
		}
		fmt.Fprintln(w, line)
	}
}

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
