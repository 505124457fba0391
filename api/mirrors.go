package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
)

type mirrorJSON struct {
	URL             string `json:"url"`
	APIEndpoint     string `json:"api_endpoint"`
	MetricsEndpoint string `json:"metrics_endpoint"`
	ID              string `json:"id"`
}

var uuidRe = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// replaceGet swaps the /get/ segment of a channel URL for another route
// (Quetz replaced every "get" in the string, mangling hosts that contain it:
// fixed). A URL without /get/ is returned unchanged.
func replaceGet(u, with string) string {
	if i := strings.LastIndex(u, "/get/"); i >= 0 {
		return u[:i] + "/" + with + "/" + u[i+len("/get/"):]
	}
	return u
}

func (s *Server) restListMirrors(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ch, err := s.channelRefusing(r.Context(), id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		ms, err := s.cat.Mirrors(r.Context(), ch.Name)
		if err != nil {
			return 0, nil, err
		}
		out := make([]mirrorJSON, 0, len(ms))
		for _, m := range ms {
			out = append(out, mirrorJSON{URL: secret.URL(m.Url), APIEndpoint: secret.URL(m.ApiEndpoint), MetricsEndpoint: secret.URL(m.MetricsEndpoint), ID: m.Id})
		}
		return http.StatusOK, out, nil
	})
}

// restAddMirror is POST /api/channels/{c}/mirrors: it checks the URL
// answers like a condamesh or Quetz mirror channel before registering it.
func (s *Server) restAddMirror(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var m mirrorJSON
		if ok, err := field(fields, "url", &m.URL, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "url"}, "missing", "Field required", nil)
		}
		for name, dst := range map[string]*string{"api_endpoint": &m.APIEndpoint, "metrics_endpoint": &m.MetricsEndpoint} {
			if _, err := field(fields, name, dst, "string"); err != nil {
				return 0, nil, err
			}
		}
		if m.APIEndpoint == "" {
			m.APIEndpoint = replaceGet(m.URL, "api/channels")
		}
		if m.MetricsEndpoint == "" {
			m.MetricsEndpoint = replaceGet(m.URL, "metrics/channels")
		}
		for name, v := range map[string]string{"url": m.URL, "api_endpoint": m.APIEndpoint, "metrics_endpoint": m.MetricsEndpoint} {
			if err := catalog.CheckUpstreamURL(name, v); err != nil {
				return 0, nil, err
			}
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
			return 0, nil, err
		}
		if err := s.verifyMirror(ctx, id, m); err != nil {
			return 0, nil, err
		}
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutMirror{PutMirror: &v1.PutMirrorOp{Mirror: &v1.ChannelMirror{
			Id: NewUUID(), Channel: ch.Name, Url: m.URL, ApiEndpoint: m.APIEndpoint, MetricsEndpoint: m.MetricsEndpoint,
			Restricted: !id.serverOwner(),
		}}}})
		if errors.Is(err, catalog.ErrExists) {
			return 0, nil, apiErr(ErrConflict, "mirror %s is already registered", secret.URL(m.URL))
		}
		return http.StatusCreated, nil, err
	})
}

// verifyMirror asks the mirror's API whether it is a mirror channel. For a
// caller who is not a server owner the call is confined to the networks
// such callers may reach, and every failure reads the same.
func (s *Server) verifyMirror(ctx context.Context, id *identity, m mirrorJSON) error {
	shown := secret.URL(m.URL)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIEndpoint, nil)
	if err != nil {
		return apiErr(ErrInvalid, "could not connect to remote repository %s", shown)
	}
	hc := s.cfg.HTTPClient
	if !id.serverOwner() {
		hc = s.cfg.RestrictedHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return apiErr(ErrInvalid, "could not connect to remote repository %s", shown)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return apiErr(ErrInvalid, "could not connect to remote repository %s", shown)
	}
	var info map[string]any
	if json.Unmarshal(body, &info) != nil {
		return apiErr(ErrInvalid, "mirror server is not quetz server")
	}
	v, ok := info["mirror_channel_url"]
	if !ok {
		return apiErr(ErrInvalid, "mirror server is not quetz server")
	}
	if str, _ := v.(string); str == "" {
		return apiErr(ErrNotFound, "%s is not a mirror server", shown)
	}
	return nil
}

func (s *Server) restDeleteMirror(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		mid := r.PathValue("id")
		if !uuidRe.MatchString(mid) {
			return 0, nil, validation([]any{"path", "mirror_id"}, "uuid_parsing", "Input should be a valid UUID", mid)
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
			return 0, nil, err
		}
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteMirror{DeleteMirror: &v1.DeleteMirrorOp{Channel: ch.Name, Id: strings.ToLower(mid)}}})
		return http.StatusOK, nil, err
	})
}

// registerWithPrimary is the mirror side of register_mirror=true: it tells
// the primary (the new mirror channel's upstream) where this mirror is.
// Failures are logged, as in Quetz; the channel exists either way.
func (s *Server) registerWithPrimary(r *http.Request, ch *v1.Channel, apiKey string) {
	base := requestBase(r)
	body, _ := json.Marshal(map[string]string{
		"url":              base + "/get/" + ch.Name,
		"api_endpoint":     base + "/api/channels/" + ch.Name,
		"metrics_endpoint": base + "/metrics/channels/" + ch.Name,
	})
	target := strings.TrimSuffix(replaceGet(ch.MirrorChannelUrl, "api/channels"), "/") + "/mirrors"
	req, err := http.NewRequestWithContext(context.WithoutCancel(r.Context()), http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		s.log.Warn("register mirror with its primary", "err", secret.Err(err))
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if apiKey != "" {
		req.Header.Set("X-API-Key", apiKey)
	}
	hc := s.cfg.HTTPClient
	if ch.UpstreamRestricted { // the upstream a caller who is not a server owner gave
		hc = s.cfg.RestrictedHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		s.log.Warn("register mirror with its primary", "channel", ch.Name, "err", secret.Err(err))
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		s.log.Warn("primary refused the mirror registration", "channel", ch.Name, "status", resp.StatusCode, "answer", secret.Text(fmt.Sprintf("%.300s", b)))
	}
}

// restMirrorConfig is GET /api/channels/{c}/mirrors/config?client=...: a
// ready-to-use client configuration listing the channel's mirrors first and
// this server (the primary) last, since no conda client re-ranks mirrors.
// client: pixi (config.toml [mirrors]), mamba (.mambarc mirrored_channels),
// conda (.condarc custom_channels: conda takes one URL, the first), or json.
func (s *Server) restMirrorConfig(w http.ResponseWriter, r *http.Request) {
	id, err := s.identify(r.Context(), r.Header)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ch, err := s.channelFor(r.Context(), id, r.PathValue("channel"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ms, err := s.cat.Mirrors(r.Context(), ch.Name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	primary := requestBase(r) + "/get/" + ch.Name
	urls := make([]string, 0, len(ms)+1)
	for _, m := range ms {
		urls = append(urls, secret.URL(m.Url))
	}
	urls = append(urls, primary)
	var b strings.Builder
	switch client := r.URL.Query().Get("client"); client {
	case "pixi":
		fmt.Fprintf(&b, "# pixi: add to ~/.config/pixi/config.toml\n[mirrors]\n%q = [\n", primary)
		for _, u := range urls {
			fmt.Fprintf(&b, "  %q,\n", u)
		}
		b.WriteString("]\n")
		w.Header().Set("Content-Type", "application/toml")
	case "mamba":
		fmt.Fprintf(&b, "# mamba / micromamba: add to ~/.mambarc\nmirrored_channels:\n  %s:\n", ch.Name)
		for _, u := range urls {
			fmt.Fprintf(&b, "    - %s\n", u)
		}
		w.Header().Set("Content-Type", "application/yaml")
	case "conda":
		fmt.Fprintf(&b, "# conda: add to ~/.condarc (conda uses one URL per channel: the first)\ncustom_channels:\n  %s: %s\n", ch.Name, strings.TrimSuffix(urls[0], "/"+ch.Name))
		w.Header().Set("Content-Type", "application/yaml")
	case "", "json":
		writeJSON(w, http.StatusOK, map[string]any{"channel": ch.Name, "primary": primary, "urls": urls})
		return
	default:
		s.writeError(w, r, validation([]any{"query", "client"}, "enum", "Input should be 'pixi', 'mamba', 'conda' or 'json'", client))
		return
	}
	_, _ = w.Write([]byte(b.String()))
}

// restMirrorMetrics is GET /metrics/channels/{c}/mirrors: all-time
// downloads per registered mirror and on this server, so an operator sees
// where downloads happen.
func (s *Server) restMirrorMetrics(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelFor(ctx, id, r.PathValue("channel"))
		if err != nil {
			return 0, nil, err
		}
		ms, err := s.cat.Mirrors(ctx, ch.Name)
		if err != nil {
			return 0, nil, err
		}
		var all int64
		err = s.cat.Downloads(ctx, ch.Name, "Y", func(_ int64, _, _ string, n int64) error { all += n; return nil })
		if err != nil {
			return 0, nil, err
		}
		type row struct {
			ID    string `json:"id"`
			URL   string `json:"url"`
			Total int64  `json:"total"`
		}
		rows := []row{}
		var fromMirrors int64
		for _, m := range ms {
			var n int64
			err := s.cat.MirrorDownloads(ctx, m.Id, func(c string, _ int64, _, _ string, count int64) error {
				if strings.EqualFold(c, ch.Name) {
					n += count
				}
				return nil
			})
			if err != nil {
				return 0, nil, err
			}
			fromMirrors += n
			rows = append(rows, row{ID: m.Id, URL: secret.URL(m.Url), Total: n})
		}
		return http.StatusOK, map[string]any{"channel": ch.Name, "total": all, "local": all - fromMirrors, "mirrors": rows}, nil
	})
}

// requestBase is this server's base URL as the client reached it.
func requestBase(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
