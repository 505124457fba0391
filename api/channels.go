package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"google.golang.org/protobuf/proto"
)

// defaultTTL is Quetz's channel ttl default.
const defaultTTL = 36000

// channelActions are the actions PUT /api/channels/{c}/actions accepts.
var channelActions = map[string]bool{
	"synchronize": true, "synchronize_repodata": true, "reindex": true, "generate_indexes": true,
	"validate_packages": true, "synchronize_metrics": true, "cleanup": true, "cleanup_dry_run": true,
}

// channelJSON is Quetz's ChannelExtra.
type channelJSON struct {
	Name             string  `json:"name"`
	Description      *string `json:"description"`
	Private          bool    `json:"private"`
	SizeLimit        *int64  `json:"size_limit"`
	TTL              int64   `json:"ttl"`
	MirrorChannelURL *string `json:"mirror_channel_url"`
	MirrorMode       *string `json:"mirror_mode"`
	MembersCount     *int64  `json:"members_count,omitempty"`
	PackagesCount    *int64  `json:"packages_count,omitempty"`
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func toChannelJSON(ci *v1.ChannelInfo, counts bool) channelJSON {
	ch := ci.Channel
	out := channelJSON{
		Name: ch.Name, Description: strOrNil(ch.Description), Private: ch.Private, SizeLimit: ch.SizeLimit,
		TTL: ch.Ttl, MirrorChannelURL: strOrNil(ch.MirrorChannelUrl), MirrorMode: strOrNil(ch.MirrorMode),
	}
	if counts {
		out.MembersCount, out.PackagesCount = &ci.MembersCount, &ci.PackagesCount
	}
	return out
}

// channelInfo is a channel as answers show it: with its counts and its
// secrets masked (secret.Channel). Every REST and Connect answer carrying a
// channel goes through it.
func (s *Server) channelInfo(ctx context.Context, ch *v1.Channel) (*v1.ChannelInfo, error) {
	ms, err := s.cat.Members(ctx, ch.Name, "")
	if err != nil {
		return nil, err
	}
	ps, err := s.cat.Packages(ctx, ch.Name)
	if err != nil {
		return nil, err
	}
	return &v1.ChannelInfo{Channel: secret.Channel(ch), MembersCount: int64(len(ms)), PackagesCount: int64(len(ps))}, nil
}

// parseChannelBody turns a REST body into a CreateChannelRequest: JSON
// types only; createChannel applies the channel rules and defaults.
func parseChannelBody(fields map[string]json.RawMessage) (*v1.CreateChannelRequest, error) {
	ch := &v1.Channel{Ttl: defaultTTL}
	req := &v1.CreateChannelRequest{Channel: ch}
	if ok, err := field(fields, "name", &ch.Name, "string"); err != nil {
		return nil, err
	} else if !ok {
		return nil, validation([]any{"body", "name"}, "missing", "Field required", nil)
	}
	if _, err := field(fields, "description", &ch.Description, "string"); err != nil {
		return nil, err
	}
	var private bool
	if ok, err := field(fields, "private", &private, "boolean"); err != nil {
		return nil, err
	} else if ok {
		req.Private = &private
	}
	if _, err := field(fields, "ttl", &ch.Ttl, "integer"); err != nil {
		return nil, err
	}
	var limit int64
	if ok, err := field(fields, "size_limit", &limit, "integer"); err != nil {
		return nil, err
	} else if ok {
		ch.SizeLimit = &limit
	}
	_, req.SizeLimitSet = fields["size_limit"]
	if _, err := field(fields, "mirror_channel_url", &ch.MirrorChannelUrl, "string"); err != nil {
		return nil, err
	}
	if _, err := field(fields, "mirror_mode", &ch.MirrorMode, "string"); err != nil {
		return nil, err
	}
	md, err := parseMetadata(fields)
	if err != nil {
		return nil, err
	}
	ch.Metadata = md
	var actions []string
	if ok, err := field(fields, "actions", &actions, "list"); err != nil {
		return nil, err
	} else if ok {
		req.Actions = &v1.StringList{Items: actions}
	}
	return req, nil
}

func parseMetadata(fields map[string]json.RawMessage) (*v1.ChannelMetadata, error) {
	var raw map[string]json.RawMessage
	if _, err := field(fields, "metadata", &raw, "dictionary"); err != nil || raw == nil {
		return nil, err
	}
	md := &v1.ChannelMetadata{}
	for name, dst := range map[string]**v1.StringList{"includelist": &md.Includelist, "excludelist": &md.Excludelist, "proxylist": &md.Proxylist} {
		var items []string
		if ok, err := field(raw, name, &items, "list"); err != nil {
			return nil, err
		} else if ok {
			*dst = &v1.StringList{Items: items}
		}
	}
	// condamesh's upstream settings.
	for name, dst := range map[string]*bool{"prefer_repodata_from_packages": &md.PreferRepodataFromPackages, "prune": &md.Prune} {
		if _, err := field(raw, name, dst, "boolean"); err != nil {
			return nil, err
		}
	}
	if _, err := field(raw, "upstream_authorization", &md.UpstreamAuthorization, "string"); err != nil {
		return nil, err
	}
	if _, err := field(raw, "sync_interval_seconds", &md.SyncIntervalSeconds, "integer"); err != nil {
		return nil, err
	}
	return md, nil
}

// createChannel is POST /api/channels and ChannelService.CreateChannel:
// both are held to the same channel rules (catalog.CheckChannelFields,
// catalog.CheckChannelName) and defaults (private, ttl), in Quetz's order.
func (s *Server) createChannel(ctx context.Context, id *identity, req *v1.CreateChannelRequest) (*v1.ChannelInfo, error) {
	ch := proto.Clone(req.GetChannel()).(*v1.Channel)
	if ch.Ttl == 0 {
		ch.Ttl = defaultTTL
	}
	ch.Private = req.Private == nil || req.GetPrivate()
	if err := catalog.CheckChannelFields(ch); err != nil {
		return nil, err
	}
	for i, a := range req.GetActions().GetItems() {
		if !channelActions[a] {
			return nil, validation([]any{"body", "actions", i}, "enum", "Input should be a valid channel action", a)
		}
	}
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	if _, err := s.cat.Channel(ctx, ch.Name); err == nil {
		return nil, apiErr(ErrConflict, "Channel %s exists", ch.Name)
	} else if !errors.Is(err, catalog.ErrNotFound) {
		return nil, err
	}
	// Only the server decides whose upstream is trusted: a maintainer's
	// proxy or mirror reaches only what non-owners' fetches may reach.
	ch.UpstreamRestricted = ch.MirrorChannelUrl != "" && !id.serverOwner()
	if ch.MirrorChannelUrl != "" {
		if !id.elevated() {
			return nil, errServerRole("this operation requires owner or maintainer roles")
		}
	} else if !id.elevated() && id.user.Role != "member" {
		return nil, errServerRole("this operation requires owner, maintainer or member roles")
	}
	if req.SizeLimitSet || ch.SizeLimit != nil { // Connect callers may set channel.size_limit alone
		if !id.elevated() {
			return nil, errServerRole("only server maintainer or owner can set channel size limit")
		}
	} else if s.cfg.DefaultChannelQuota > 0 {
		q := s.cfg.DefaultChannelQuota
		ch.SizeLimit = &q
	}
	if err := catalog.CheckChannelName(ch.Name); err != nil {
		return nil, err
	}
	if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: ch, OwnerId: id.user.Id}}}); err != nil {
		if errors.Is(err, catalog.ErrExists) {
			return nil, apiErr(ErrConflict, "Channel %s exists", ch.Name)
		}
		return nil, err
	}
	created, gone, err := s.readBack(ctx, ch)
	if err != nil {
		return nil, err
	}
	if gone {
		return &v1.ChannelInfo{Channel: secret.Channel(created), MembersCount: 1}, nil
	}
	actions := req.GetActions().GetItems()
	if req.Actions == nil && channelKind(created) == "mirror" {
		actions = []string{"synchronize_repodata"}
	}
	var repeat *int64
	if every := created.GetMetadata().GetSyncIntervalSeconds(); every > 0 {
		repeat = &every // periodic synchronisation as a channel setting
	}
	for _, a := range actions {
		var every *int64
		if strings.HasPrefix(a, "synchronize") {
			every = repeat
		}
		if _, err := s.scheduleAction(ctx, id, created, a, nil, every); err != nil {
			s.log.Warn("initial channel action refused", "channel", created.Name, "action", a, "err", err)
		}
	}
	if len(actions) > 0 {
		s.wakeJobs()
	}
	return s.channelInfo(ctx, created)
}

func (s *Server) restCreateChannel(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		req, err := parseChannelBody(fields)
		if err != nil {
			return 0, nil, err
		}
		register, err := queryBool(r, "register_mirror", false)
		if err != nil {
			return 0, nil, err
		}
		ci, err := s.createChannel(r.Context(), id, req)
		if err != nil {
			return 0, nil, err
		}
		if register && channelKind(ci.Channel) == "mirror" {
			ch, err := s.cat.Channel(r.Context(), ci.Channel.Name) // ci's URL is masked
			if err != nil {
				return 0, nil, err
			}
			s.registerWithPrimary(r, ch, r.URL.Query().Get("mirror_api_key"))
		}
		return http.StatusCreated, nil, nil
	})
}

// listChannels implements Quetz's visibility rules: anonymous callers see
// public channels; others see public channels plus their own (public=true)
// or only their own (public=false).
func (s *Server) listChannels(ctx context.Context, id *identity, memberOnly bool, q string) ([]*v1.ChannelInfo, error) {
	chans, err := s.visibleChannels(ctx, id, memberOnly)
	if err != nil {
		return nil, err
	}
	var out []*v1.ChannelInfo
	for _, ch := range chans {
		if q != "" && !strings.Contains(strings.ToLower(ch.Name), strings.ToLower(q)) {
			continue
		}
		ci, err := s.channelInfo(ctx, ch)
		if err != nil {
			return nil, err
		}
		out = append(out, ci)
	}
	return out, nil
}

// visibleChannels returns the channels the caller sees in listings and
// searches: those where it has a channel role, plus the public ones unless
// memberOnly (anonymous callers always see the public ones). Elevated users
// see no more, as in Quetz.
func (s *Server) visibleChannels(ctx context.Context, id *identity, memberOnly bool) ([]*v1.Channel, error) {
	chans, err := s.cat.Channels(ctx)
	if err != nil {
		return nil, err
	}
	mine, err := s.callerChannels(ctx, id)
	if err != nil {
		return nil, err
	}
	out := chans[:0]
	for _, ch := range chans {
		if mine[catalog.ChannelKey(ch.Name)] || (!ch.Private && (!memberOnly || id.anonymous())) {
			out = append(out, ch)
		}
	}
	return out, nil
}

// callerChannels returns the channel keys (catalog.ChannelKey) where the
// caller has a channel role: a scoped key's channels, or the user's
// memberships. Anonymous callers have none.
func (s *Server) callerChannels(ctx context.Context, id *identity) (map[string]bool, error) {
	mine := map[string]bool{}
	switch {
	case id.anonymous():
		return mine, nil
	case id.scoped():
		for _, r := range id.key.Roles {
			mine[catalog.ChannelKey(r.Channel)] = true
		}
		return mine, nil
	}
	return s.cat.UserChannels(ctx, id.user.Id)
}

func (s *Server) restListChannelsCommon(r *http.Request, id *identity) ([]channelJSON, error) {
	public, err := queryBool(r, "public", true)
	if err != nil {
		return nil, err
	}
	cis, err := s.listChannels(r.Context(), id, !public, r.URL.Query().Get("q"))
	if err != nil {
		return nil, err
	}
	out := make([]channelJSON, 0, len(cis))
	for _, ci := range cis {
		out = append(out, toChannelJSON(ci, true))
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name) })
	return out, nil
}

func (s *Server) restListChannels(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		out, err := s.restListChannelsCommon(r, id)
		return http.StatusOK, out, err
	})
}

func (s *Server) restListChannelsPaginated(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		out, err := s.restListChannelsCommon(r, id)
		if err != nil {
			return 0, nil, err
		}
		body, err := paginated(r, out)
		return http.StatusOK, body, err
	})
}

func (s *Server) getChannel(ctx context.Context, id *identity, name string) (*v1.ChannelInfo, error) {
	ch, err := s.channelFor(ctx, id, name)
	if err != nil {
		return nil, err
	}
	return s.channelInfo(ctx, ch)
}

func (s *Server) restGetChannel(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ci, err := s.getChannel(r.Context(), id, r.PathValue("channel"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, toChannelJSON(ci, true), nil
	})
}

// noSizeLimit as an UpdateChannelRequest.size_limit removes the limit
// (REST: "size_limit": null).
const noSizeLimit = -1

// updateChannel is PATCH /api/channels/{c}: only private, size_limit, ttl
// and metadata (merged key by key) change. Proxies accept it too (a Quetz
// defect fixed). A negative size_limit removes the limit. metadataKeys
// names the metadata fields the update sets (REST: those in the body); nil
// sets all of them (Connect replaces the metadata). The command names the
// fields it sets, so the catalog changes only those, on the channel as it
// is when the command applies: two updates of different settings at the
// same time both take effect.
func (s *Server) updateChannel(ctx context.Context, id *identity, req *v1.UpdateChannelRequest, metadataKeys []string) (*v1.ChannelInfo, error) {
	ch, err := s.channelFor(ctx, id, req.GetName())
	if err != nil {
		return nil, err
	}
	if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
		return nil, err
	}
	if req.SizeLimit != nil && !id.elevated() {
		return nil, errServerRole("only server maintainer or owner can set channel size limit")
	}
	next := proto.Clone(ch).(*v1.Channel)
	var fields []string
	if req.Private != nil {
		next.Private = *req.Private
		fields = append(fields, "private")
	}
	if req.SizeLimit != nil {
		next.SizeLimit = req.SizeLimit
		if *req.SizeLimit < 0 {
			next.SizeLimit = nil
		}
		fields = append(fields, "size_limit")
	}
	if req.Ttl != nil {
		next.Ttl = *req.Ttl
		fields = append(fields, "ttl")
	}
	if md := req.GetMetadata(); md != nil {
		if err := catalog.CheckMetadata(md); err != nil {
			return nil, err
		}
		md = proto.Clone(md).(*v1.ChannelMetadata)
		secret.KeepMasked(ch.GetMetadata(), md) // a secret sent back as read stays
		next.Metadata = md                      // REST merges key by key before (mergedMetadata)
		if metadataKeys == nil {
			fields = append(fields, "metadata")
		}
		for _, k := range metadataKeys {
			fields = append(fields, "metadata."+k)
		}
	}
	if len(fields) == 0 {
		return s.channelInfo(ctx, ch)
	}
	if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: next, Fields: fields}}}); err != nil {
		return nil, err
	}
	updated, gone, err := s.readBack(ctx, next)
	if err != nil || gone {
		return &v1.ChannelInfo{Channel: secret.Channel(updated)}, err
	}
	return s.channelInfo(ctx, updated)
}

// readBack reads a channel after a write to it was applied. A concurrent
// delete may have removed it since: the write still happened, so the
// answer is the channel as written (gone reports it), not a 404.
func (s *Server) readBack(ctx context.Context, written *v1.Channel) (ch *v1.Channel, gone bool, err error) {
	ch, err = s.cat.Channel(ctx, written.Name)
	if errors.Is(err, catalog.ErrNotFound) {
		return written, true, nil
	}
	return ch, false, err
}

func (s *Server) restPatchChannel(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		if _, err := s.channelFor(ctx, id, r.PathValue("channel")); err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		req := &v1.UpdateChannelRequest{Name: r.PathValue("channel")}
		var metadataKeys []string
		for name := range fields {
			switch name {
			case "private":
				var v bool
				if err := nonNullField(fields, name, &v, "boolean"); err != nil {
					return 0, nil, err
				}
				req.Private = &v
			case "ttl":
				var v int64
				if err := nonNullField(fields, name, &v, "integer"); err != nil {
					return 0, nil, err
				}
				req.Ttl = &v
			case "size_limit":
				v := int64(noSizeLimit)
				if _, err := field(fields, name, &v, "integer"); err != nil {
					return 0, nil, err
				}
				req.SizeLimit = &v
			case "metadata":
				md, keys, err := s.mergedMetadata(ctx, r.PathValue("channel"), fields)
				if err != nil {
					return 0, nil, err
				}
				req.Metadata, metadataKeys = md, keys
			default:
				return 0, nil, apiErr(ErrInvalid, "attribute '%s' of channel can not be changed", name)
			}
		}
		ci, err := s.updateChannel(ctx, id, req, metadataKeys)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, toChannelJSON(ci, false), nil
	})
}

func (s *Server) deleteChannel(ctx context.Context, id *identity, name string) error {
	ch, err := s.channelFor(ctx, id, name)
	if err != nil {
		return err
	}
	if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
		return err
	}
	_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteChannel{DeleteChannel: &v1.DeleteChannelOp{Name: ch.Name}}})
	return err
}

func (s *Server) restDeleteChannel(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		return http.StatusOK, nil, s.deleteChannel(r.Context(), id, r.PathValue("channel"))
	})
}

// mergedMetadata applies the metadata keys present in a PATCH body onto the
// channel's stored metadata (Quetz merges key by key) and returns the keys
// it set (not nil).
func (s *Server) mergedMetadata(ctx context.Context, channel string, fields map[string]json.RawMessage) (*v1.ChannelMetadata, []string, error) {
	md, err := parseMetadata(fields)
	if err != nil {
		return nil, nil, err
	}
	var present map[string]json.RawMessage
	_ = json.Unmarshal(fields["metadata"], &present)
	cur, err := s.cat.Channel(ctx, channel)
	if err != nil {
		return nil, nil, err
	}
	out := proto.Clone(cur.GetMetadata()).(*v1.ChannelMetadata)
	if out == nil {
		out = &v1.ChannelMetadata{}
	}
	keys := []string{}
	if md == nil {
		return out, keys, nil
	}
	for key := range present {
		switch key {
		case "includelist":
			out.Includelist = md.Includelist
		case "excludelist":
			out.Excludelist = md.Excludelist
		case "proxylist":
			out.Proxylist = md.Proxylist
		case "prefer_repodata_from_packages":
			out.PreferRepodataFromPackages = md.PreferRepodataFromPackages
		case "prune":
			out.Prune = md.Prune
		case "upstream_authorization":
			out.UpstreamAuthorization = md.UpstreamAuthorization
		case "sync_interval_seconds":
			out.SyncIntervalSeconds = md.SyncIntervalSeconds
		default:
			continue
		}
		keys = append(keys, key)
	}
	sort.Strings(keys) // the command is the same whatever the map's order
	return out, keys, nil
}
