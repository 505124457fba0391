package api

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"time"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/internal/secret"
	"google.golang.org/protobuf/proto"
)

const keyAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// NewKey returns a fresh API key: 32 random alphanumerics, usable as a
// /t/<token>/ token by every conda client.
func NewKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = keyAlphabet[int(b[i])%len(keyAlphabet)]
	}
	return string(b)
}

// NewUUID returns a random RFC 4122 version 4 UUID string.
func NewUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hexd = "0123456789abcdef"
	out := make([]byte, 0, 36)
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

type roleJSON struct {
	Channel string  `json:"channel"`
	Package *string `json:"package"`
	Role    string  `json:"role"`
}

type keyJSON struct {
	Description string      `json:"description"`
	TimeCreated string      `json:"time_created"`
	ExpireAt    *string     `json:"expire_at"`
	Roles       *[]roleJSON `json:"roles"`
	Key         string      `json:"key"`
}

func toKeyJSON(k *v1.ApiKey, key string) keyJSON {
	out := keyJSON{Description: k.Description, TimeCreated: time.Unix(k.CreatedUnix, 0).UTC().Format(time.DateOnly), ExpireAt: strOrNil(k.ExpireAt), Key: key}
	if len(k.Roles) > 0 {
		roles := make([]roleJSON, 0, len(k.Roles))
		for _, r := range k.Roles {
			roles = append(roles, roleJSON{Channel: r.Channel, Package: strOrNil(r.Package), Role: r.Role})
		}
		out.Roles = &roles
	}
	return out
}

// createKey is POST /api/api-keys and KeyService.CreateKey.
func (s *Server) createKey(ctx context.Context, id *identity, req *v1.CreateKeyRequest) (string, *v1.ApiKey, error) {
	for _, r := range req.GetRoles() {
		if !roleIn(r.Role, "owner", "maintainer", "member") {
			return "", nil, validation([]any{"body", "roles", "role"}, "string_pattern_mismatch", "String should match pattern '^(owner|maintainer|member)$'", r.Role)
		}
		if id.anonymous() {
			return "", nil, errNotLoggedIn
		}
		if id.elevated() {
			continue
		}
		chRole := s.channelRole(ctx, id, r.Channel)
		var ok bool
		switch {
		case r.Package == "" && r.Role == "owner":
			ok = chRole == "owner"
		case r.Package == "":
			ok = roleIn(chRole, "owner", "maintainer")
		case r.Role == "owner":
			ok = roleIn(chRole, "owner", "maintainer") || s.packageRole(ctx, id, r.Channel, r.Package) == "owner"
		default:
			ok = roleIn(chRole, "owner", "maintainer") || roleIn(s.packageRole(ctx, id, r.Channel, r.Package), "owner", "maintainer")
		}
		if !ok {
			return "", nil, errNoPermission
		}
	}
	if id.anonymous() {
		return "", nil, errNotLoggedIn
	}
	if req.ExpireAt != "" {
		if _, err := time.Parse(time.DateOnly, req.ExpireAt); err != nil {
			return "", nil, validation([]any{"body", "expire_at"}, "date_from_datetime_parsing", "Input should be a valid date", req.ExpireAt)
		}
	}
	key := NewKey()
	k := &v1.ApiKey{KeyHash: s.keys.Hash(key), Description: req.Description, UserId: id.user.Id, OwnerId: id.owner.Id, ExpireAt: req.ExpireAt, Roles: req.Roles, KeyPrefix: key[:6]}
	op := &v1.PutApiKeyOp{Key: k}
	if len(req.Roles) > 0 {
		anon := &v1.User{Id: NewUUID()}
		k.UserId = anon.Id
		op.AnonymousUser = anon
	}
	if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutApiKey{PutApiKey: op}}); err != nil {
		return "", nil, err
	}
	stored, err := s.cat.APIKey(ctx, k.KeyHash)
	return key, keyView(stored), err
}

// keyView is a key record as answers show it: without its stored hash.
func keyView(k *v1.ApiKey) *v1.ApiKey {
	if k == nil {
		return nil
	}
	out := proto.Clone(k).(*v1.ApiKey)
	out.KeyHash = ""
	return out
}

func (s *Server) restCreateKey(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		req := &v1.CreateKeyRequest{}
		if ok, err := field(fields, "description", &req.Description, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "description"}, "missing", "Field required", nil)
		}
		if _, err := field(fields, "expire_at", &req.ExpireAt, "string"); err != nil {
			return 0, nil, err
		}
		var roles []roleJSON
		if _, err := field(fields, "roles", &roles, "list"); err != nil {
			return 0, nil, err
		}
		for _, r := range roles {
			role := &v1.Role{Channel: r.Channel, Role: r.Role}
			if r.Package != nil {
				role.Package = *r.Package
			}
			req.Roles = append(req.Roles, role)
		}
		key, k, err := s.createKey(r.Context(), id, req)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, toKeyJSON(k, key), nil
	})
}

// listKeys returns the caller's live keys (their owner is the caller).
func (s *Server) listKeys(ctx context.Context, id *identity) ([]*v1.ApiKey, error) {
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	keys, err := s.cat.APIKeys(ctx, func(k *v1.ApiKey) bool { return !k.Deleted && k.OwnerId == id.owner.Id })
	for i, k := range keys {
		keys[i] = keyView(k)
	}
	return keys, err
}

func (s *Server) restListKeys(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		keys, err := s.listKeys(r.Context(), id)
		if err != nil {
			return 0, nil, err
		}
		out := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			out = append(out, toKeyJSON(k, k.KeyPrefix+"…"))
		}
		return http.StatusOK, out, nil
	})
}

// deleteKey soft-deletes a key: elevated users, the key's user or its owner.
func (s *Server) deleteKey(ctx context.Context, id *identity, key string) error {
	k, err := s.lookupKey(ctx, key)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && k.Deleted) {
		return apiErr(ErrNotFound, "key '%s' does not exist", secret.Mask) // never echo a key
	}
	if err != nil {
		return err
	}
	if id.anonymous() {
		return errNotLoggedIn
	}
	if !id.elevated() && k.UserId != id.user.Id && k.OwnerId != id.owner.Id {
		return errNoPermission
	}
	k = proto.Clone(k).(*v1.ApiKey)
	k.Deleted = true
	_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutApiKey{PutApiKey: &v1.PutApiKeyOp{Key: k}}})
	return err
}

func (s *Server) restDeleteKey(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		return http.StatusOK, nil, s.deleteKey(r.Context(), id, r.PathValue("key"))
	})
}
