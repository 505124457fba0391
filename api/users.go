package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"google.golang.org/protobuf/proto"
)

type profileJSON struct {
	Name      string `json:"name"`
	AvatarURL string `json:"avatar_url"`
}

type userJSON struct {
	ID       string      `json:"id"`
	Username string      `json:"username"`
	Profile  profileJSON `json:"profile"`
}

func toUserJSON(u *v1.User) userJSON {
	return userJSON{ID: u.Id, Username: u.Username, Profile: profileJSON{Name: u.Name}}
}

func (s *Server) restMe(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		return http.StatusOK, map[string]any{
			"name": id.owner.Name, "avatar_url": "",
			"user": map[string]string{"id": id.owner.Id, "username": id.owner.Username},
		}, nil
	})
}

func (s *Server) userFor(ctx context.Context, username string) (*v1.User, error) {
	u, err := s.cat.UserByName(ctx, username)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, apiErr(ErrNotFound, "user %s not found", username)
	}
	return u, err
}

// CreateUser creates a named user with a server role and an initial API key.
// Quetz gets users from its login providers; condamesh, having none, lets
// elevated users create them (POST /api/users) and the node create the
// first admin.
func (s *Server) CreateUser(ctx context.Context, username, name, role string) (*v1.User, string, error) {
	if username == "" || !validQuetzPackageName(username) {
		return nil, "", validation([]any{"body", "username"}, "string_pattern_mismatch", "String should match pattern '^[a-z0-9-_\\.]+$'", username)
	}
	if role != "" && !roleIn(role, "owner", "maintainer", "member") {
		return nil, "", validation([]any{"body", "role"}, "string_pattern_mismatch", "String should match pattern '^(owner|maintainer|member)$'", role)
	}
	if _, err := s.cat.UserByName(ctx, username); err == nil {
		return nil, "", apiErr(ErrConflict, "user %s exists", username)
	}
	u := &v1.User{Id: NewUUID(), Username: username, Name: name, Role: role}
	if _, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: u}}}); err != nil {
		if errors.Is(err, catalog.ErrExists) {
			return nil, "", apiErr(ErrConflict, "user %s exists", username)
		}
		return nil, "", err
	}
	key, err := s.PresetKey(ctx, u, "initial key", "")
	return u, key, err
}

// PresetKey stores an unscoped key for user; key "" generates one.
func (s *Server) PresetKey(ctx context.Context, u *v1.User, description, key string) (string, error) {
	if key == "" {
		key = NewKey()
	}
	k := &v1.ApiKey{KeyHash: s.keys.Hash(key), Description: description, UserId: u.Id, OwnerId: u.Id, KeyPrefix: key[:min(6, len(key))]}
	_, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutApiKey{PutApiKey: &v1.PutApiKeyOp{Key: k}}})
	return key, err
}

func (s *Server) restCreateUser(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		if !id.elevated() {
			return 0, nil, errServerRole("this operation requires owner or maintainer roles")
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var username, name, role string
		for f, dst := range map[string]*string{"username": &username, "name": &name, "role": &role} {
			if _, err := field(fields, f, dst, "string"); err != nil {
				return 0, nil, err
			}
		}
		if role == "owner" && id.user.Role != "owner" {
			return 0, nil, errServerRole("only a server owner can create owners")
		}
		u, key, err := s.CreateUser(r.Context(), username, name, role)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, map[string]any{"id": u.Id, "username": u.Username, "role": strOrNil(u.Role), "api_key": key}, nil
	})
}

func (s *Server) restGetUser(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		u, err := s.userFor(r.Context(), r.PathValue("username"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, toUserJSON(u), nil
	})
}

func (s *Server) restGetUserRole(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		u, err := s.userFor(r.Context(), r.PathValue("username"))
		if err != nil {
			return 0, nil, err
		}
		if u.Id != id.user.Id && !id.elevated() {
			return 0, nil, errNoPermission
		}
		return http.StatusOK, map[string]any{"role": strOrNil(u.Role)}, nil
	})
}

// restSetUserRole assigns a server role. Owner and maintainer need a server
// owner; member and clearing (null) need an elevated user (Quetz let anyone
// clear a role: fixed). Only an owner may change an owner's role, and the
// last owner keeps it (catalog.ErrLastOwner); the break-glass path is
// `condamesh admin restore-owner` (node.RestoreOwner).
func (s *Server) restSetUserRole(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var role string
		if _, err := field(fields, "role", &role, "string"); err != nil {
			return 0, nil, err
		}
		if role != "" && !roleIn(role, "owner", "maintainer", "member") {
			return 0, nil, validation([]any{"body", "role"}, "string_pattern_mismatch", "String should match pattern '^(owner|maintainer|member)$'", role)
		}
		u, err := s.userFor(ctx, r.PathValue("username"))
		if err != nil {
			return 0, nil, err
		}
		switch {
		case (roleIn(role, "owner", "maintainer") || u.Role == "owner") && id.user.Role != "owner":
			return 0, nil, errNoPermission
		case !id.elevated():
			return 0, nil, errNoPermission
		}
		nu := proto.Clone(u).(*v1.User)
		nu.Role = role
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: nu}}})
		return http.StatusOK, nil, err
	})
}
