package api

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
)

// uploadCheck decides, once the package name is known from the filename,
// whether the caller may upload it.
type uploadCheck func(ctx context.Context, name string) error

// staged is a package file stored as a blob and validated, not yet published.
type staged struct {
	version *v1.PackageVersion
	cid     cid.Cid
}

// stage streams one package file into the blob store (hashing sha256 and
// md5 in the same pass), checks the whole archive (conda.VerifyPackage,
// before the blob becomes visible: a refused archive is not stored) and
// builds its record from its info/ files. It publishes nothing. A blob it
// stored stays when the upload fails later: the same bytes may be
// referenced by a record another request published meanwhile (blobs are
// content-addressed), so only the blob sweep, after its grace period,
// deletes what nothing references (store/DESIGN.md).
func (s *Server) stage(ctx context.Context, id *identity, ch *v1.Channel, filename string, body io.Reader, quotaLeft int64, wantSHA []byte, check uploadCheck) (*staged, error) {
	fn, err := conda.ParseFilename(filename)
	if err != nil {
		return nil, badFilename(filename)
	}
	if err := check(ctx, fn.Name); err != nil {
		return nil, err
	}
	limit := s.cfg.MaxUploadSize
	quotaBound := ch.SizeLimit != nil && quotaLeft < limit
	if quotaBound {
		if quotaLeft < 0 {
			quotaLeft = 0
		}
		limit = quotaLeft
	}
	md5sum := md5.New() // the store computes sha256 and size
	var pkg *conda.PackageInfo
	// The archive is checked whole while the store makes it durable; a
	// package that fails the check is not stored.
	verify := func(r io.ReaderAt, size int64) (err error) {
		pkg, err = conda.VerifyPackage(r, size, filename, conda.VerifyOptions{MaxUnpacked: s.cfg.MaxUnpackedSize, Bzip2Workers: s.cfg.Bzip2Workers})
		return err
	}
	opt := store.PutOptions{Tee: md5sum, WantSHA256: wantSHA, MaxSize: limit, Check: verify}
	if limit == 0 {
		opt.MaxSize = -1
	}
	info, err := s.putLimited(ctx, body, opt)
	if errors.Is(err, store.ErrTooLarge) {
		if quotaBound {
			return nil, apiErr(ErrInvalid, "%s is above quota of %d bytes", ch.Name, ch.GetSizeLimit())
		}
		return nil, apiErr(ErrTooLarge, "package file %s is larger than the %d bytes allowed", filename, s.cfg.MaxUploadSize)
	}
	if err != nil {
		return nil, err
	}
	d := conda.Digests{Size: info.Size}
	copy(d.SHA256[:], info.SHA256)
	md5sum.Sum(d.MD5[:0])
	rec := conda.NewRecord(pkg, d)
	subdir := rec.Subdir
	if !conda.ValidSubdir(subdir) {
		return nil, apiErr(ErrBadRequest, "invalid subdir %q in info/index.json of %s", subdir, filename)
	}
	v := catalog.NewPackageVersion(ch.Name, rec, conda.ChannelMeta(pkg), id.owner.Id)
	return &staged{cid: info.CID, version: v}, nil
}

// badFilename refuses a file name ParseFilename rejected, with Quetz's
// status and wording: Quetz reads every name not ending in .conda as a
// .tar.bz2 (400 "not a bzip2 file"), and refuses a package name outside
// ^[a-z0-9-_.]*$ with 422.
func badFilename(filename string) error {
	if !conda.IsPackageFile(filename) {
		return apiErr(ErrBadRequest, "package file name has wrong format %s: not a .conda file, not a bzip2 file", filename)
	}
	stem := strings.TrimSuffix(strings.TrimSuffix(filename, conda.ExtConda), conda.ExtTarBz2)
	unsafe := strings.ContainsAny(stem, `/\`) || strings.Contains(stem, "..")
	if i := strings.LastIndexByte(stem, '-'); i > 0 && !unsafe {
		if j := strings.LastIndexByte(stem[:i], '-'); j > 0 && !validQuetzPackageName(stem[:j]) {
			return apiErr(ErrInvalid, "Validation Error for package: %s: package name %q must match ^[a-z0-9-_.]*$", filename, stem[:j])
		}
	}
	return apiErr(ErrBadRequest, "package file name has wrong format %s", filename)
}

// putLimited is Put with MaxSize -1 meaning "nothing may be written".
func (s *Server) putLimited(ctx context.Context, body io.Reader, opt store.PutOptions) (store.BlobInfo, error) {
	if opt.MaxSize < 0 {
		var one [1]byte
		if n, _ := io.ReadFull(body, one[:]); n > 0 {
			return store.BlobInfo{}, store.ErrTooLarge
		}
		opt.MaxSize = 0
	}
	return s.blobs.Put(ctx, body, opt)
}

// mayForce is the one rule deciding who may overwrite a package file
// (force), on every upload route: a channel owner or an owner of the
// package (elevated users pass). Uploading without force needs less
// (each route says what).
func (s *Server) mayForce(ctx context.Context, id *identity, ch, pkg string) error {
	return s.requirePackage(ctx, id, ch, pkg, []string{"owner"}, []string{"owner"})
}

// publish checks the right to force and duplicates, and commits all staged
// files in one command.
func (s *Server) publish(ctx context.Context, id *identity, ch *v1.Channel, sts []*staged, force bool) error {
	vers := make([]*v1.PackageVersion, 0, len(sts))
	for _, st := range sts {
		v := st.version
		if force {
			if err := s.mayForce(ctx, id, ch.Name, v.Package); err != nil {
				return err
			}
		} else if _, err := s.cat.Version(ctx, ch.Name, v.Platform, v.Filename); err == nil {
			return apiErr(ErrConflict, "Duplicate %s", v.Filename)
		}
		vers = append(vers, v)
	}
	_, err := s.prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: vers, Force: force, OwnerId: id.owner.Id}}})
	switch {
	case errors.Is(err, catalog.ErrExists):
		err = apiErr(ErrConflict, "Duplicate %v", err)
	case errors.Is(err, catalog.ErrQuota):
		err = apiErr(ErrInvalid, "%s is above quota of %d bytes", ch.Name, ch.GetSizeLimit())
	}
	return err
}

func quotaLeft(ch *v1.Channel) int64 {
	if ch.SizeLimit == nil {
		return 1<<63 - 1
	}
	return ch.GetSizeLimit() - ch.Size
}

// uploadMultipart handles the two files/ endpoints.
func (s *Server) uploadMultipart(w http.ResponseWriter, r *http.Request, endpointPkg string) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		ch, err := s.channelFor(ctx, id, r.PathValue("channel"))
		if err != nil {
			return 0, nil, err
		}
		if endpointPkg != "" {
			if _, err := s.cat.Package(ctx, ch.Name, endpointPkg); errors.Is(err, catalog.ErrNotFound) {
				return 0, nil, apiErr(ErrNotFound, "Package %s/%s not found", ch.Name, endpointPkg)
			}
		}
		if err := guardKinds(ch, "proxy", "mirror"); err != nil {
			return 0, nil, err
		}
		if id.anonymous() {
			return 0, nil, errNotLoggedIn
		}
		force, err := queryBool(r, "force", false)
		if err != nil {
			return 0, nil, err
		}
		mr, err := r.MultipartReader()
		if err != nil {
			return 0, nil, validation([]any{"body", "files"}, "missing", "Field required: multipart form with 'files' parts", nil)
		}
		var sts []*staged
		left := quotaLeft(ch)
		check := func(ctx context.Context, name string) error {
			if endpointPkg != "" && name != endpointPkg {
				return apiErr(ErrBadRequest, "requested package endpoint '%s' does not match the uploaded package name '%s'", endpointPkg, name)
			}
			if err := s.requirePackage(ctx, id, ch.Name, name, []string{"owner", "maintainer"}, []string{"owner", "maintainer"}); err != nil {
				return err
			}
			if force { // checked again by publish, after every form field
				return s.mayForce(ctx, id, ch.Name, name)
			}
			return nil
		}
		for {
			part, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, nil, apiErr(ErrBadRequest, "malformed multipart body: %v", err)
			}
			switch part.FormName() {
			case "force":
				b, _ := io.ReadAll(io.LimitReader(part, maxBoolField))
				if len(b) == 0 {
					continue // FastAPI reads an empty form field as absent
				}
				if force, err = parseBool([]any{"body", "force"}, string(b)); err != nil {
					return 0, nil, err
				}
				continue
			case "files":
			default:
				continue
			}
			st, err := s.stage(ctx, id, ch, partFileName(part), part, left, nil, check)
			if err != nil {
				return 0, nil, err
			}
			left -= st.version.Size
			sts = append(sts, st)
		}
		if len(sts) == 0 {
			return 0, nil, validation([]any{"body", "files"}, "missing", "Field required", nil)
		}
		return http.StatusCreated, nil, s.publish(ctx, id, ch, sts, force)
	})
}

// partFileName is the file name a part was sent with. Unlike
// Part.FileName it is not cut to its last element: "../x-1-0.conda" is
// refused, not silently renamed.
func partFileName(p *multipart.Part) string {
	_, params, err := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
	if err != nil {
		return ""
	}
	return params["filename"]
}

func (s *Server) restUploadFiles(w http.ResponseWriter, r *http.Request) {
	s.uploadMultipart(w, r, "")
}

func (s *Server) restUploadPackageFiles(w http.ResponseWriter, r *http.Request) {
	s.uploadMultipart(w, r, r.PathValue("package"))
}

// restUploadRaw is POST /api/channels/{c}/upload/{filename}?sha256=: the
// body is the file. Unlike Quetz it applies the same guard, quota and
// validation as files/.
func (s *Server) restUploadRaw(w http.ResponseWriter, r *http.Request) {
	s.handle(w, r, func(id *identity) (int, any, error) {
		ctx := r.Context()
		want := r.URL.Query().Get("sha256")
		if want == "" {
			return 0, nil, validation([]any{"query", "sha256"}, "missing", "Field required", nil)
		}
		sum, err := hex.DecodeString(want)
		if err != nil || len(sum) != 32 {
			return 0, nil, validation([]any{"query", "sha256"}, "string_pattern_mismatch", "sha256 must be 64 hexadecimal characters", want)
		}
		force, err := queryBool(r, "force", false)
		if err != nil {
			return 0, nil, err
		}
		ch, err := s.channelRefusing(ctx, id, r.PathValue("channel"), "proxy", "mirror")
		if err != nil {
			return 0, nil, err
		}
		// The role comes before the duplicate check: no answer about the
		// channel's files to callers who may not upload.
		if err := s.requireChannel(ctx, id, ch.Name, "owner", "maintainer"); err != nil {
			return 0, nil, err
		}
		check := func(ctx context.Context, name string) error {
			if force {
				return s.mayForce(ctx, id, ch.Name, name)
			}
			return nil
		}
		filename := r.PathValue("filename")
		if fn, err := conda.ParseFilename(filename); err == nil && !force {
			// Refuse a duplicate before reading the body (any subdir).
			if vs, err := s.cat.Versions(ctx, ch.Name, fn.Name); err == nil {
				for _, v := range vs {
					if v.Filename == filename {
						return 0, nil, apiErr(ErrConflict, "Duplicate %s", filename)
					}
				}
			}
		}
		st, err := s.stage(ctx, id, ch, filename, r.Body, quotaLeft(ch), sum, check)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusCreated, nil, s.publish(ctx, id, ch, []*staged{st}, force)
	})
}
