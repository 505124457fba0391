package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// packageJSON is Quetz's Package.
type packageJSON struct {
	Name           string   `json:"name"`
	Summary        *string  `json:"summary"`
	Description    *string  `json:"description"`
	URL            *string  `json:"url"`
	Platforms      []string `json:"platforms"`
	CurrentVersion *string  `json:"current_version"`
	LatestChange   *string  `json:"latest_change"`
}

// versionJSON is Quetz's PackageVersion.
type versionJSON struct {
	ID            string         `json:"id"`
	ChannelName   string         `json:"channel_name"`
	PackageName   string         `json:"package_name"`
	Platform      string         `json:"platform"`
	Version       string         `json:"version"`
	BuildString   string         `json:"build_string"`
	BuildNumber   int64          `json:"build_number"`
	Filename      string         `json:"filename"`
	Info          map[string]any `json:"info"`
	Uploader      uploaderJSON   `json:"uploader"`
	TimeCreated   string         `json:"time_created"`
	DownloadCount int64          `json:"download_count"`
}

type uploaderJSON struct {
	Name      *string `json:"name"`
	AvatarURL *string `json:"avatar_url"`
}

func (s *Server) toPackageJSON(ctx context.Context, p *v1.Package) packageJSON {
	vers, _ := s.cat.Versions(ctx, p.Channel, p.Name)
	return packageJSONFrom(p, vers)
}

// packageJSONFrom builds a package's JSON from its record and its files.
func packageJSONFrom(p *v1.Package, vers []*v1.PackageVersion) packageJSON {
	out := packageJSON{Name: p.Name, Summary: strOrNil(p.Summary), Description: strOrNil(p.Description), URL: strOrNil(p.Url), Platforms: slices.Clone(p.Platforms)}
	if out.Platforms == nil {
		out.Platforms = []string{}
	}
	sort.Strings(out.Platforms)
	if len(vers) > 0 {
		cur, latest := vers[0], vers[0]
		for _, v := range vers[1:] {
			if conda.CompareVersions(v.Version, cur.Version) > 0 {
				cur = v
			}
			if v.ModifiedUnix > latest.ModifiedUnix {
				latest = v
			}
		}
		out.CurrentVersion = &cur.Version
		t := naive(latest.ModifiedUnix)
		out.LatestChange = &t
	}
	return out
}

func (s *Server) toVersionJSON(ctx context.Context, v *v1.PackageVersion) versionJSON {
	info, _ := conda.DecodeRecordFields(v.RecordJson)
	if info == nil {
		info = map[string]any{}
	}
	out := versionJSON{
		ID: v.Sha256, ChannelName: v.Channel, PackageName: v.Package, Platform: v.Platform, Version: v.Version,
		BuildString: v.BuildString, BuildNumber: v.BuildNumber, Filename: v.Filename, Info: info, TimeCreated: naive(v.CreatedUnix),
	}
	out.DownloadCount, _ = s.cat.DownloadTotal(ctx, v.Channel, v.Platform, v.Filename)
	if u, err := s.cat.User(ctx, v.UploaderId); err == nil {
		name := u.Name
		if name == "" {
			name = u.Username
		}
		out.Uploader.Name = &name
	}
	return out
}

// packageFor resolves a channel and a package with read permission; private
// channels also admit package members.
func (s *Server) packageFor(ctx context.Context, id *identity, chName, pkg string) (*v1.Channel, *v1.Package, error) {
	ch, err := s.channelFor(ctx, id, chName)
	if err != nil {
		var ae *Error
		if !errors.As(err, &ae) || ae.Kind != ErrForbidden {
			return nil, nil, err
		}
		raw, cerr := s.cat.Channel(ctx, chName)
		if cerr != nil || s.packageRole(ctx, id, raw.Name, pkg) == "" {
			return nil, nil, err
		}
		ch = raw
	}
	p, err := s.cat.Package(ctx, ch.Name, pkg)
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, nil, apiErr(ErrNotFound, "Package %s/%s not found", chName, pkg)
	}
	return ch, p, err
}

func (s *Server) listPackages(ctx context.Context, id *identity, chName string) ([]*v1.Package, error) {
	ch, err := s.channelRefusing(ctx, id, chName, "proxy")
	if err != nil {
		return nil, err
	}
	return s.cat.Packages(ctx, ch.Name)
}

func (s *Server) restPackages(r *http.Request, id *identity) ([]packageJSON, error) {
	ps, err := s.listPackages(r.Context(), id, r.PathValue("channel"))
	if err != nil {
		return nil, err
	}
	out := make([]packageJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, s.toPackageJSON(r.Context(), p))
	}
	return out, nil
}

func (s *Server) restListPackages(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, false, func(id *identity) ([]packageJSON, error) { return s.restPackages(r, id) })
}

func (s *Server) restListPackagesPaginated(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, true, func(id *identity) ([]packageJSON, error) { return s.restPackages(r, id) })
}

func (s *Server) restCreatePackage(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy", "mirror")
		if err != nil {
			return 0, nil, err
		}
		fields, err := decodeBody(r)
		if err != nil {
			return 0, nil, err
		}
		var p v1.Package
		if ok, err := field(fields, "name", &p.Name, "string"); err != nil {
			return 0, nil, err
		} else if !ok {
			return 0, nil, validation([]any{"body", "name"}, "missing", "Field required", nil)
		}
		if _, err := field(fields, "summary", &p.Summary, "string"); err != nil {
			return 0, nil, err
		}
		if _, err := field(fields, "description", &p.Description, "string"); err != nil {
			return 0, nil, err
		}
		if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
			return 0, nil, err
		}
		if !validQuetzPackageName(p.Name) {
			return 0, nil, validation([]any{"body", "name"}, "string_pattern_mismatch", "String should match pattern '^[a-z0-9-_\\.]*$'", p.Name)
		}
		p.Channel = ch.Name
		_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_CreatePackage{CreatePackage: &v1.CreatePackageOp{Package: &p, OwnerId: id.owner.Id}}})
		if errors.Is(err, catalog.ErrExists) {
			return 0, nil, apiErr(ErrConflict, "Package %s/%s exists", ch.Name, p.Name)
		}
		return http.StatusCreated, nil, err
	})
}

// validQuetzPackageName is Quetz's package-name rule: lowercase letters,
// digits, '-', '_' and '.', non-empty.
func validQuetzPackageName(n string) bool {
	if n == "" {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (s *Server) restGetPackage(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		_, p, err := s.packageFor(r.Context(), id, r.PathValue("channel"), r.PathValue("package"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.toPackageJSON(r.Context(), p), nil
	})
}

func (s *Server) deletePackage(ctx context.Context, id *identity, chName, pkg string) error {
	ch, p, err := s.packageFor(ctx, id, chName, pkg)
	if err != nil {
		return err
	}
	if err := s.requirePackage(ctx, id, ch.Name, p.Name, []string{"owner", "maintainer"}, []string{"owner", "maintainer"}); err != nil {
		return err
	}
	_, err = s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeletePackage{DeletePackage: &v1.DeletePackageOp{Channel: ch.Name, Name: p.Name}}})
	return err
}

func (s *Server) restDeletePackage(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		return http.StatusOK, nil, s.deletePackage(r.Context(), id, r.PathValue("channel"), r.PathValue("package"))
	})
}

// listVersions is a package's files, newest version first, optionally
// only those created in [time_created__ge, time_created__le].
func (s *Server) listVersions(r *http.Request, id *identity) ([]versionJSON, error) {
	ctx := r.Context()
	var ge, le int64 = -1, -1
	for name, dst := range map[string]*int64{"time_created__ge": &ge, "time_created__le": &le} {
		if v := r.URL.Query().Get(name); v != "" {
			t, err := parseNaive(v)
			if err != nil {
				return nil, validation([]any{"query", name}, "datetime_parsing", "Input should be a valid datetime", v)
			}
			*dst = t.Unix()
		}
	}
	ch, p, err := s.packageFor(ctx, id, r.PathValue("channel"), r.PathValue("package"))
	if err != nil {
		return nil, err
	}
	vers, err := s.cat.Versions(ctx, ch.Name, p.Name)
	if err != nil {
		return nil, err
	}
	out := make([]versionJSON, 0, len(vers))
	for _, v := range vers {
		if (ge >= 0 && v.CreatedUnix < ge) || (le >= 0 && v.CreatedUnix > le) {
			continue
		}
		out = append(out, s.toVersionJSON(ctx, v))
	}
	sort.SliceStable(out, func(i, j int) bool { return conda.CompareVersions(out[i].Version, out[j].Version) > 0 })
	return out, nil
}

func (s *Server) restListVersions(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, false, func(id *identity) ([]versionJSON, error) { return s.listVersions(r, id) })
}

func (s *Server) restListVersionsPaginated(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, true, func(id *identity) ([]versionJSON, error) { return s.listVersions(r, id) })
}

// parseNaive parses Quetz's naive ISO datetimes (and RFC 3339).
func parseNaive(v string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.999999", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02", time.RFC3339Nano} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("bad datetime")
}

func (s *Server) versionFor(ctx context.Context, id *identity, r *http.Request) (*v1.Channel, *v1.PackageVersion, error) {
	ch, p, err := s.packageFor(ctx, id, r.PathValue("channel"), r.PathValue("package"))
	if err != nil {
		return nil, nil, err
	}
	platform, filename := r.PathValue("platform"), r.PathValue("filename")
	v, err := s.cat.Version(ctx, ch.Name, platform, filename)
	if errors.Is(err, catalog.ErrNotFound) || (err == nil && v.Package != p.Name) {
		return nil, nil, apiErr(ErrNotFound, "package version %s/%s not found", platform, filename)
	}
	return ch, v, err
}

func (s *Server) restGetVersion(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		_, v, err := s.versionFor(r.Context(), id, r)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, s.toVersionJSON(r.Context(), v), nil
	})
}

func (s *Server) restDeleteVersion(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, v, err := s.versionFor(ctx, id, r)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, nil, s.deleteVersion(ctx, id, ch, v)
	})
}

// deleteVersion removes one package file: channel or package owner or
// maintainer (elevated users pass).
func (s *Server) deleteVersion(ctx context.Context, id *identity, ch *v1.Channel, v *v1.PackageVersion) error {
	if err := s.requirePackage(ctx, id, ch.Name, v.Package, []string{"owner", "maintainer"}, []string{"owner", "maintainer"}); err != nil {
		return err
	}
	_, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteVersion{DeleteVersion: &v1.DeleteVersionOp{Channel: ch.Name, Platform: v.Platform, Filename: v.Filename}}})
	return err
}
