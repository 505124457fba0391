package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/gen/condamesh/v1/condameshv1connect"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// conn holds the flags every client command shares.
type conn struct {
	server string
	apiKey string
}

func (c *conn) flags(cmd *cobra.Command) {
	cmd.PersistentFlags().StringVar(&c.server, "server", "http://127.0.0.1:8000", "URL of a condamesh node")
	cmd.PersistentFlags().StringVar(&c.apiKey, "api-key", "", "API key (sent as X-API-Key)")
}

// keyTransport adds the API key to every request.
type keyTransport struct {
	key  string
	next http.RoundTripper
}

func (t keyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if t.key != "" {
		r = r.Clone(r.Context())
		r.Header.Set("X-API-Key", t.key)
	}
	return t.next.RoundTrip(r)
}

func (c *conn) http() *http.Client {
	return &http.Client{Transport: keyTransport{key: c.apiKey, next: http.DefaultTransport}}
}

func (c *conn) base() (string, error) {
	u, err := url.Parse(c.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", usageError{fmt.Errorf("--server %q: want http(s)://host:port", c.server)}
	}
	return strings.TrimSuffix(c.server, "/"), nil
}

func (c *conn) channels() (condameshv1connect.ChannelServiceClient, error) {
	b, err := c.base()
	if err != nil {
		return nil, err
	}
	return condameshv1connect.NewChannelServiceClient(c.http(), b), nil
}

func (c *conn) keys() (condameshv1connect.KeyServiceClient, error) {
	b, err := c.base()
	if err != nil {
		return nil, err
	}
	return condameshv1connect.NewKeyServiceClient(c.http(), b), nil
}

// friendly turns a Connect error into a one-line message.
func friendly(err error) error {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return fmt.Errorf("%s: %s", ce.Code(), ce.Message())
	}
	return err
}

func newChannel() *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "channel", Short: "Create, list, show, change and delete channels"}
	c.flags(cmd)
	var private bool
	var description, mirrorURL, mode string
	var noActions bool
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a channel", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.channels()
			if err != nil {
				return err
			}
			req := &v1.CreateChannelRequest{Channel: &v1.Channel{Name: args[0], Description: description, MirrorChannelUrl: mirrorURL, MirrorMode: mode}, Private: &private}
			if noActions {
				req.Actions = &v1.StringList{}
			}
			res, err := cl.CreateChannel(cmd.Context(), req)
			if err != nil {
				return friendly(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created channel %s\n", res.Channel.Channel.Name)
			return nil
		},
	}
	create.Flags().BoolVar(&private, "private", false, "only members can read the channel")
	create.Flags().StringVar(&description, "description", "", "description")
	create.Flags().StringVar(&mirrorURL, "mirror-url", "", "upstream channel URL (proxy or mirror channels)")
	create.Flags().StringVar(&mode, "mode", "", "proxy or mirror (with --mirror-url)")
	create.Flags().BoolVar(&noActions, "no-sync", false, "do not start the initial synchronisation of a mirror")

	var listOut, getOut output
	list := &cobra.Command{
		Use: "list", Short: "List channels", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listOut.isJSON() {
				return c.printREST(cmd, "/api/channels")
			}
			cl, err := c.channels()
			if err != nil {
				return err
			}
			res, err := cl.ListChannels(cmd.Context(), &v1.ListChannelsRequest{})
			if err != nil {
				return friendly(err)
			}
			return writeTable(cmd.OutOrStdout(), func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "NAME\tKIND\tPRIVATE\tPACKAGES\tSIZE")
				for _, ci := range res.Channels {
					ch := ci.Channel
					kind := "local"
					if ch.MirrorMode != "" {
						kind = ch.MirrorMode
					}
					fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d\n", ch.Name, kind, ch.Private, ci.PackagesCount, ch.Size)
				}
			})
		},
	}
	listOut.addFlag(list)
	get := &cobra.Command{
		Use: "get NAME", Short: "Show a channel's whole record (-o json: as GET /api/channels/NAME answers)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if getOut.isJSON() {
				return c.printREST(cmd, "/api/channels/"+url.PathEscape(args[0]))
			}
			cl, err := c.channels()
			if err != nil {
				return err
			}
			res, err := cl.GetChannel(cmd.Context(), &v1.GetChannelRequest{Name: args[0]})
			if err != nil {
				return friendly(err)
			}
			return printJSON(cmd.OutOrStdout(), res.Channel)
		},
	}
	getOut.addFlag(get)
	var setPrivate bool
	var ttl int64
	patch := &cobra.Command{
		Use: "patch NAME", Short: "Change a channel's private flag or TTL", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.channels()
			if err != nil {
				return err
			}
			req := &v1.UpdateChannelRequest{Name: args[0]}
			if cmd.Flags().Changed("private") {
				req.Private = &setPrivate
			}
			if cmd.Flags().Changed("ttl") {
				req.Ttl = &ttl
			}
			res, err := cl.UpdateChannel(cmd.Context(), req)
			if err != nil {
				return friendly(err)
			}
			return printJSON(cmd.OutOrStdout(), res.Channel)
		},
	}
	patch.Flags().BoolVar(&setPrivate, "private", false, "make the channel private (or --private=false public)")
	patch.Flags().Int64Var(&ttl, "ttl", 0, "cache TTL in seconds")
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a channel and its packages", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.channels()
			if err != nil {
				return err
			}
			if _, err := cl.DeleteChannel(cmd.Context(), &v1.DeleteChannelRequest{Name: args[0]}); err != nil {
				return friendly(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted channel %s\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(create, list, get, patch, del, newChannelSync(&c))
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newKey() *cobra.Command {
	var c conn
	cmd := &cobra.Command{Use: "key", Short: "Create, list and delete API keys"}
	c.flags(cmd)
	var description, expire string
	create := &cobra.Command{
		Use: "create", Short: "Create an API key for yourself", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.keys()
			if err != nil {
				return err
			}
			res, err := cl.CreateKey(cmd.Context(), &v1.CreateKeyRequest{Description: description, ExpireAt: expire})
			if err != nil {
				return friendly(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Key)
			return nil
		},
	}
	create.Flags().StringVar(&description, "description", "", "what the key is for")
	create.Flags().StringVar(&expire, "expire", "", "expiry date YYYY-MM-DD")
	var listOut output
	list := &cobra.Command{
		Use: "list", Short: "List your API keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if listOut.isJSON() {
				return c.printREST(cmd, "/api/api-keys")
			}
			cl, err := c.keys()
			if err != nil {
				return err
			}
			res, err := cl.ListKeys(cmd.Context(), &v1.ListKeysRequest{})
			if err != nil {
				return friendly(err)
			}
			return writeTable(cmd.OutOrStdout(), func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "KEY\tDESCRIPTION\tCREATED\tEXPIRES")
				for _, k := range res.Keys {
					fmt.Fprintf(tw, "%s…\t%s\t%s\t%s\n", k.KeyPrefix, k.Description, time.Unix(k.CreatedUnix, 0).UTC().Format(time.DateOnly), k.ExpireAt)
				}
			})
		},
	}
	listOut.addFlag(list)
	del := &cobra.Command{
		Use: "delete KEY", Short: "Delete an API key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.keys()
			if err != nil {
				return err
			}
			if _, err := cl.DeleteKey(cmd.Context(), &v1.DeleteKeyRequest{Key: args[0]}); err != nil {
				return friendly(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "deleted")
			return nil
		},
	}
	cmd.AddCommand(create, list, del)
	return cmd
}

// newUpload streams package files to POST /api/channels/{c}/upload/{file}
// with their sha256. It prints a line per file uploaded, and on a terminal
// (stderr) draws a progress bar per file too; with -q it prints nothing
// unless it fails. (Uploads use the REST route because it streams request
// bodies of any size.)
func newUpload() *cobra.Command {
	var c conn
	var force, quiet bool
	cmd := &cobra.Command{
		Use: "upload CHANNEL FILE...", Short: "Upload package files (.conda, .tar.bz2) to a channel", Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			base, err := c.base()
			if err != nil {
				return err
			}
			for _, p := range args[1:] {
				if err := uploadFile(cmd.Context(), c.http(), base, args[0], p, force, quiet, cmd.ErrOrStderr()); err != nil {
					return fmt.Errorf("%s: %w", filepath.Base(p), err)
				}
				if !quiet {
					fmt.Fprintf(cmd.OutOrStdout(), "uploaded %s\n", filepath.Base(p))
				}
			}
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().BoolVar(&force, "force", false, "replace a file that already exists")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print nothing on success (errors still go to stderr); without it: a line per file, and a progress bar on a terminal")
	return cmd
}

func uploadFile(ctx context.Context, hc *http.Client, base, channel, path string, force, quiet bool, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	var body io.Reader = f
	if !quiet && isTerminal(stderr) {
		bar := progressbar.DefaultBytes(st.Size(), "uploading "+filepath.Base(path))
		progressbar.OptionSetWriter(stderr)(bar)
		r := progressbar.NewReader(f, bar)
		body = &r
	}
	u := fmt.Sprintf("%s/api/channels/%s/upload/%s?sha256=%s&force=%v", base, url.PathEscape(channel), url.PathEscape(filepath.Base(path)), hex.EncodeToString(h.Sum(nil)), force)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, body)
	if err != nil {
		return err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return apiError(resp, b)
}
