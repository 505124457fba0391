package api

import (
	"errors"
	"net/http"

	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

type memberJSON struct {
	Role string   `json:"role"`
	User userJSON `json:"user"`
}

func (s *Server) membersJSON(r *http.Request, ms []*v1.Member) []memberJSON {
	out := make([]memberJSON, 0, len(ms))
	for _, m := range ms {
		u, err := s.cat.User(r.Context(), m.UserId)
		if err != nil || u.Username == "" {
			continue // anonymous key users are not listed
		}
		out = append(out, memberJSON{Role: m.Role, User: toUserJSON(u)})
	}
	return out
}

func parseMemberBody(r *http.Request) (username, role string, err error) {
	fields, err := decodeBody(r)
	if err != nil {
		return "", "", err
	}
	if ok, err := field(fields, "username", &username, "string"); err != nil || !ok {
		if err == nil {
			err = validation([]any{"body", "username"}, "missing", "Field required", nil)
		}
		return "", "", err
	}
	if _, err := field(fields, "role", &role, "string"); err != nil {
		return "", "", err
	}
	if !roleIn(role, "owner", "maintainer", "member") {
		return "", "", validation([]any{"body", "role"}, "string_pattern_mismatch", "String should match pattern '^(owner|maintainer|member)$'", role)
	}
	return username, role, nil
}

func (s *Server) restListMembers(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
			return 0, nil, err
		}
		ms, err := s.cat.Members(ctx, ch.Name, "")
		return http.StatusOK, s.membersJSON(r, ms), err
	})
}

func (s *Server) restAddMember(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		username, role, err := parseMemberBody(r)
		if err != nil {
			return 0, nil, err
		}
		u, err := s.userFor(ctx, username)
		if err != nil {
			return 0, nil, err
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner"); err != nil {
			return 0, nil, err
		}
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_SetMember{SetMember: &v1.SetMemberOp{Member: &v1.Member{Channel: ch.Name, UserId: u.Id, Role: role}}}})
		return http.StatusCreated, nil, err
	})
}

func (s *Server) restRemoveMember(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy")
		if err != nil {
			return 0, nil, err
		}
		vals, ok := r.URL.Query()["username"]
		if !ok {
			return 0, nil, validation([]any{"query", "username"}, "missing", "Field required", nil)
		}
		username := vals[0]
		u, err := s.userFor(ctx, username)
		if err != nil {
			return 0, nil, err
		}
		if _, err := s.cat.Member(ctx, ch.Name, "", u.Id); errors.Is(err, catalog.ErrNotFound) {
			return 0, nil, apiErr(ErrNotFound, "user %s is not a member of channel %s", username, ch.Name)
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner"); err != nil {
			return 0, nil, err
		}
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_SetMember{SetMember: &v1.SetMemberOp{Member: &v1.Member{Channel: ch.Name, UserId: u.Id}, Remove: true}}})
		return http.StatusOK, nil, err
	})
}

func (s *Server) restListPackageMembers(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ch, p, err := s.packageFor(r.Context(), id, r.PathValue("channel"), r.PathValue("package"))
		if err != nil {
			return 0, nil, err
		}
		ms, err := s.cat.Members(r.Context(), ch.Name, p.Name)
		return http.StatusOK, s.membersJSON(r, ms), err
	})
}

func (s *Server) restAddPackageMember(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, p, err := s.packageFor(ctx, id, r.PathValue("channel"), r.PathValue("package"))
		if err != nil {
			return 0, nil, err
		}
		username, role, err := parseMemberBody(r)
		if err != nil {
			return 0, nil, err
		}
		u, err := s.userFor(ctx, username)
		if err != nil {
			return 0, nil, err
		}
		if err := s.requirePackage(ctx, id, ch.Name, p.Name, []string{"owner", "maintainer"}, []string{"owner"}); err != nil {
			return 0, nil, err
		}
		if _, err := s.cat.Member(ctx, ch.Name, p.Name, u.Id); err == nil {
			return 0, nil, apiErr(ErrConflict, "member %s exists", username)
		}
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_SetMember{SetMember: &v1.SetMemberOp{Member: &v1.Member{Channel: ch.Name, Package: p.Name, UserId: u.Id, Role: role}}}})
		return http.StatusCreated, nil, err
	})
}
