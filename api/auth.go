package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
)

// identity is who a request acts as. user nil means anonymous.
type identity struct {
	user  *v1.User   // whose rights apply (a scoped key's anonymous user)
	owner *v1.User   // who is credited (the key's owner)
	key   *v1.ApiKey // nil without a key
}

// lookupKey returns the stored record of an API key: under its keyed hash,
// or under its legacy (unkeyed SHA-256) hash while MigrateKeyHashes has not
// moved it yet.
func (s *Server) lookupKey(ctx context.Context, key string) (*v1.ApiKey, error) {
	k, err := s.cat.APIKey(ctx, s.keys.Hash(key))
	if errors.Is(err, catalog.ErrNotFound) {
		return s.cat.APIKey(ctx, secret.LegacyKeyHash(key))
	}
	return k, err
}

// MigrateKeyHashes moves every API key record stored under its legacy hash
// (unkeyed SHA-256, before keyed hashing) to its keyed hash, one Raft
// command per key, and returns how many it moved. The node runs it once it
// leads, at every start; it is idempotent.
func (s *Server) MigrateKeyHashes(ctx context.Context) (int, error) {
	legacy, err := s.cat.APIKeys(ctx, func(k *v1.ApiKey) bool { return secret.IsLegacyKeyHash(k.KeyHash) })
	if err != nil {
		return 0, err
	}
	moved := 0
	for _, k := range legacy {
		old := k.KeyHash
		k.KeyHash, _ = s.keys.Rehash(old)
		_, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutApiKey{PutApiKey: &v1.PutApiKeyOp{Key: k, ReplacesHash: old}}})
		if errors.Is(err, catalog.ErrNotFound) || errors.Is(err, catalog.ErrExists) {
			continue // moved meanwhile (another node, a concurrent run)
		}
		if err != nil {
			return moved, fmt.Errorf("api: migrate api key hash: %w", err)
		}
		moved++
	}
	return moved, nil
}

// keyFrom reads the API key of a request: X-API-Key (also set from a
// /t/<token>/ prefix) or Authorization: Bearer.
func keyFrom(h http.Header) string {
	if k := headerValue(h, "X-Api-Key"); k != "" {
		return k
	}
	if a, ok := strings.CutPrefix(headerValue(h, "Authorization"), "Bearer "); ok {
		return strings.TrimSpace(a)
	}
	return ""
}

// identify resolves the caller. Unknown, deleted or expired keys make the
// caller anonymous (Quetz semantics); only store failures are errors.
func (s *Server) identify(ctx context.Context, h http.Header) (*identity, error) {
	key := keyFrom(h)
	if key == "" {
		return &identity{}, nil
	}
	k, err := s.lookupKey(ctx, key)
	if errors.Is(err, catalog.ErrNotFound) {
		return &identity{}, nil
	}
	if err != nil {
		return nil, err
	}
	if k.Deleted || (k.ExpireAt != "" && k.ExpireAt < s.cfg.Now().UTC().Format(time.DateOnly)) {
		return &identity{}, nil
	}
	u, err := s.cat.User(ctx, k.UserId)
	if err != nil {
		return &identity{}, nil
	}
	owner := u
	if k.OwnerId != k.UserId {
		if o, err := s.cat.User(ctx, k.OwnerId); err == nil {
			owner = o
		}
	}
	return &identity{user: u, owner: owner, key: k}, nil
}

func (id *identity) anonymous() bool { return id.user == nil }

// serverOwner reports a caller whose server role is owner.
func (id *identity) serverOwner() bool { return id.user != nil && id.user.Role == "owner" }

func (id *identity) elevated() bool {
	return id.user != nil && (id.user.Role == "owner" || id.user.Role == "maintainer")
}

// scoped reports whether the key carries explicit roles.
func (id *identity) scoped() bool { return id.key != nil && len(id.key.Roles) > 0 }

// channelRole returns the caller's role on a channel ("" for none).
func (s *Server) channelRole(ctx context.Context, id *identity, ch string) string {
	if id.anonymous() {
		return ""
	}
	if id.scoped() {
		for _, r := range id.key.Roles {
			if r.Package == "" && strings.EqualFold(r.Channel, ch) {
				return r.Role
			}
		}
		return ""
	}
	m, err := s.cat.Member(ctx, ch, "", id.user.Id)
	if err != nil {
		return ""
	}
	return m.Role
}

// packageRole returns the caller's role on a package ("" for none).
func (s *Server) packageRole(ctx context.Context, id *identity, ch, pkg string) string {
	if id.anonymous() {
		return ""
	}
	if id.scoped() {
		for _, r := range id.key.Roles {
			if r.Package == pkg && strings.EqualFold(r.Channel, ch) {
				return r.Role
			}
		}
		return ""
	}
	m, err := s.cat.Member(ctx, ch, pkg, id.user.Id)
	if err != nil {
		return ""
	}
	return m.Role
}

func roleIn(role string, allowed ...string) bool {
	for _, a := range allowed {
		if role == a {
			return true
		}
	}
	return false
}

// requireChannel demands identity plus one of the channel roles (elevated
// users pass).
func (s *Server) requireChannel(ctx context.Context, id *identity, ch string, roles ...string) error {
	if id.anonymous() {
		return errNotLoggedIn
	}
	if id.elevated() || roleIn(s.channelRole(ctx, id, ch), roles...) {
		return nil
	}
	return errNoPermission
}

// requirePackage demands a channel role or a package role from the lists.
func (s *Server) requirePackage(ctx context.Context, id *identity, ch, pkg string, chRoles, pkgRoles []string) error {
	if id.anonymous() {
		return errNotLoggedIn
	}
	if id.elevated() || roleIn(s.channelRole(ctx, id, ch), chRoles...) || roleIn(s.packageRole(ctx, id, ch, pkg), pkgRoles...) {
		return nil
	}
	return errNoPermission
}

// channelFor resolves a channel and checks read permission: 404, then for
// private channels 401 (anonymous) or 403 (no role).
func (s *Server) channelFor(ctx context.Context, id *identity, name string) (*v1.Channel, error) {
	return s.readable(ctx, id, name, s.cat.Channel)
}

// channelView is channelFor returning the catalog's shared record, which
// the caller must not modify (the read path).
func (s *Server) channelView(ctx context.Context, id *identity, name string) (*v1.Channel, error) {
	return s.readable(ctx, id, name, s.cat.ChannelView)
}

func (s *Server) readable(ctx context.Context, id *identity, name string, get func(context.Context, string) (*v1.Channel, error)) (*v1.Channel, error) {
	ch, err := get(ctx, name)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, apiErr(ErrNotFound, "Channel %s not found", name)
	}
	if err != nil {
		return nil, err
	}
	if !ch.Private || id.elevated() || s.channelRole(ctx, id, ch.Name) != "" {
		return ch, nil
	}
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	if id.scoped() {
		for _, r := range id.key.Roles {
			if strings.EqualFold(r.Channel, ch.Name) {
				return ch, nil
			}
		}
	}
	return nil, errNoPermission
}

// channelKind is "local", "proxy" or "mirror".
func channelKind(ch *v1.Channel) string {
	if ch.MirrorChannelUrl == "" {
		return "local"
	}
	if ch.MirrorMode == "proxy" {
		return "proxy"
	}
	return "mirror"
}

// channelRefusing is channelFor followed by Quetz's 405 for the channel
// kinds an endpoint does not serve.
func (s *Server) channelRefusing(ctx context.Context, id *identity, name string, refused ...string) (*v1.Channel, error) {
	ch, err := s.channelFor(ctx, id, name)
	if err != nil {
		return nil, err
	}
	if err := guardKinds(ch, refused...); err != nil {
		return nil, err
	}
	return ch, nil
}

// guardKinds refuses a channel kind with Quetz's 405.
func guardKinds(ch *v1.Channel, refused ...string) error {
	k := channelKind(ch)
	for _, r := range refused {
		if k == r {
			return apiErr(ErrNotAllowed, "This method is not implemented for %s channels", k)
		}
	}
	return nil
}

// headerValue is h.Get for a key already in canonical form, without
// canonicalising it again on every request.
func headerValue(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}
