package api

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// listUsers is GET /api/users and /api/paginated/users: named users
// (anonymous key users have no name and are never listed) whose username
// contains ?q= (case-insensitive), by username. Elevated callers see every
// user, others only themselves, as in Quetz (which still counted every user
// in all_records_count: here the count is of what the caller sees).
func (s *Server) listUsers(ctx context.Context, id *identity, q string) ([]userJSON, error) {
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	q = strings.ToLower(q)
	users, err := s.cat.Users(ctx, func(u *v1.User) bool {
		return u.Username != "" && strings.Contains(strings.ToLower(u.Username), q) && (id.elevated() || u.Id == id.user.Id)
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(users, func(i, j int) bool { return users[i].Username < users[j].Username })
	out := make([]userJSON, 0, len(users))
	for _, u := range users {
		out = append(out, toUserJSON(u))
	}
	return out, nil
}

func (s *Server) restListUsers(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, false, func(id *identity) ([]userJSON, error) {
		return s.listUsers(r.Context(), id, r.URL.Query().Get("q"))
	})
}

func (s *Server) restListUsersPaginated(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, true, func(id *identity) ([]userJSON, error) {
		return s.listUsers(r.Context(), id, r.URL.Query().Get("q"))
	})
}

// userData resolves a named user whose data the caller may read: itself,
// or anyone for elevated callers (Quetz's assert_read_user_data).
func (s *Server) userData(ctx context.Context, id *identity, username string) (*v1.User, error) {
	u, err := s.cat.UserByName(ctx, username)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && u.Username == "") {
		return nil, apiErr(ErrNotFound, "User %s not found", username)
	}
	if err != nil {
		return nil, err
	}
	if id.anonymous() {
		return nil, errNotLoggedIn
	}
	if u.Id != id.user.Id && !id.elevated() {
		return nil, errServerRole("this operation requires owner or maintainer roles")
	}
	return u, nil
}

// channelRoleJSON is Quetz's ChannelRole; packageRoleJSON its PackageRole.
type channelRoleJSON struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

type packageRoleJSON struct {
	Name        string `json:"name"`
	ChannelName string `json:"channel_name"`
	Role        string `json:"role"`
}

// userMembers returns the memberships of the user named in the path, with
// package roles (packages true) or channel roles.
func (s *Server) userMembers(r *http.Request, id *identity, packages bool) ([]*v1.Member, error) {
	u, err := s.userData(r.Context(), id, r.PathValue("username"))
	if err != nil {
		return nil, err
	}
	ms, err := s.cat.UserMembers(r.Context(), u.Id)
	if err != nil {
		return nil, err
	}
	out := ms[:0]
	for _, m := range ms {
		if (m.Package != "") == packages {
			out = append(out, m)
		}
	}
	return out, nil
}

func (s *Server) userChannelRoles(r *http.Request, id *identity) ([]channelRoleJSON, error) {
	ms, err := s.userMembers(r, id, false)
	out := make([]channelRoleJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, channelRoleJSON{Name: m.Channel, Role: m.Role})
	}
	return out, err
}

func (s *Server) userPackageRoles(r *http.Request, id *identity) ([]packageRoleJSON, error) {
	ms, err := s.userMembers(r, id, true)
	out := make([]packageRoleJSON, 0, len(ms))
	for _, m := range ms {
		out = append(out, packageRoleJSON{Name: m.Package, ChannelName: m.Channel, Role: m.Role})
	}
	return out, err
}

func (s *Server) restUserChannels(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, false, func(id *identity) ([]channelRoleJSON, error) { return s.userChannelRoles(r, id) })
}

func (s *Server) restUserChannelsPaginated(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, true, func(id *identity) ([]channelRoleJSON, error) { return s.userChannelRoles(r, id) })
}

func (s *Server) restUserPackages(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, false, func(id *identity) ([]packageRoleJSON, error) { return s.userPackageRoles(r, id) })
}

func (s *Server) restUserPackagesPaginated(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, true, func(id *identity) ([]packageRoleJSON, error) { return s.userPackageRoles(r, id) })
}
