package jobs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"github.com/ipfs/go-cid"
	"google.golang.org/protobuf/proto"
)

// Reconciler regenerates a channel's published index files now.
type Reconciler interface {
	Reconcile(ctx context.Context, channel string) error
}

// Blobs is what the package actions need from the blob store.
type Blobs interface {
	Open(ctx context.Context, c cid.Cid) (*store.Blob, error)
	Verify(ctx context.Context, c cid.Cid) error
	List(ctx context.Context, fn func(store.BlobInfo) error) error
}

// GenerateIndexes is the generate_indexes action.
func GenerateIndexes(idx Reconciler) Action {
	return func(ctx context.Context, j *v1.Job) error {
		return idx.Reconcile(ctx, j.Channel)
	}
}

// ValidatePackages is the validate_packages action: every package file of
// the channel whose blob is missing, or whose bytes no longer hash to its
// sha256, is removed from the channel; then the indexes are regenerated.
func ValidatePackages(cat *catalog.Catalog, blobs Blobs, prop Proposer, idx Reconciler) Action {
	return func(ctx context.Context, j *v1.Job) error {
		vers, err := cat.Versions(ctx, j.Channel, "")
		if err != nil {
			return err
		}
		for _, v := range vers {
			if err := validateVersion(ctx, blobs, prop, v); err != nil {
				return err
			}
		}
		return idx.Reconcile(ctx, j.Channel)
	}
}

// ValidatePackage is validate_packages on one package file (a job with an
// items_spec): the file is removed from its channel if its blob is missing
// or no longer hashes to its sha256. The indexer republishes on its own.
func ValidatePackage(blobs Blobs, prop Proposer) ItemAction {
	return func(ctx context.Context, _ *v1.Job, v *v1.PackageVersion) error {
		return validateVersion(ctx, blobs, prop, v)
	}
}

func validateVersion(ctx context.Context, blobs Blobs, prop Proposer, v *v1.PackageVersion) error {
	c, err := store.CIDFromHex(v.Sha256)
	if err == nil {
		err = blobs.Verify(ctx, c)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrDigestMismatch) {
		return fmt.Errorf("verify %s/%s: %w", v.Platform, v.Filename, err)
	}
	_, err = prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteVersion{DeleteVersion: &v1.DeleteVersionOp{Channel: v.Channel, Platform: v.Platform, Filename: v.Filename}}})
	return err
}

// Reindex is the reindex action. It re-reads every package file of the
// channel from its blob and rewrites its record from the archive's info/
// files (repairing records written by older versions or by hand); then it
// adopts every package archive in the blob store that no channel and no
// proxy cache references (the store outlives lost metadata: after a
// metadata loss, reindex re-creates a channel's records from its blobs
// with no upstream traffic); then it regenerates the indexes.
func Reindex(cat *catalog.Catalog, blobs Blobs, prop Proposer, idx Reconciler) Action {
	return func(ctx context.Context, j *v1.Job) error {
		vers, err := cat.Versions(ctx, j.Channel, "")
		if err != nil {
			return err
		}
		if err := rewriteRecords(ctx, blobs, prop, vers); err != nil {
			return err
		}
		if ch, err := cat.Channel(ctx, j.Channel); err == nil && ch.MirrorMode != "proxy" && mayAdopt(ctx, cat, j) {
			if err := adopt(ctx, cat, blobs, prop, j); err != nil {
				return err
			}
		}
		return idx.Reconcile(ctx, j.Channel)
	}
}

// ReindexPackage is reindex on one package file (a job with an
// items_spec): its record is rewritten from the archive's info/ files.
func ReindexPackage(blobs Blobs, prop Proposer) ItemAction {
	return func(ctx context.Context, _ *v1.Job, v *v1.PackageVersion) error {
		return rewriteRecords(ctx, blobs, prop, []*v1.PackageVersion{v})
	}
}

// rewriteRecords re-reads each file's archive and replaces the records
// that differ, in one command.
func rewriteRecords(ctx context.Context, blobs Blobs, prop Proposer, vers []*v1.PackageVersion) error {
	var fixed []*v1.PackageVersion
	for _, v := range vers {
		nv, err := reread(ctx, blobs, v)
		if err != nil {
			return fmt.Errorf("reindex %s/%s: %w", v.Platform, v.Filename, err)
		}
		if string(nv.RecordJson) != string(v.RecordJson) || string(nv.AboutJson) != string(v.AboutJson) {
			fixed = append(fixed, nv)
		}
	}
	if len(fixed) == 0 {
		return nil
	}
	_, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: fixed, Force: true}}})
	return err
}

// mayAdopt reports whether the job's owner may take the store's
// unreferenced archives: they may be packages deleted from any channel,
// private ones included, so only server owners and maintainers may.
func mayAdopt(ctx context.Context, cat *catalog.Catalog, j *v1.Job) bool {
	u, err := cat.User(ctx, j.OwnerId)
	return err == nil && (u.Role == "owner" || u.Role == "maintainer")
}

// adopt publishes the unreferenced package archives of the store into the
// job's channel, in batches.
func adopt(ctx context.Context, cat *catalog.Catalog, blobs Blobs, prop Proposer, j *v1.Job) error {
	referenced := map[string]bool{}
	if err := cat.EachVersionSHA256(ctx, func(h string) error { referenced[h] = true; return nil }); err != nil {
		return err
	}
	if err := cat.EachProxyCID(ctx, func(c string) error { referenced[c] = true; return nil }); err != nil {
		return err
	}
	var orphans []store.BlobInfo
	err := blobs.List(ctx, func(b store.BlobInfo) error {
		if !referenced[hex.EncodeToString(b.SHA256)] && !referenced[b.CID.String()] && b.Size >= 64 {
			orphans = append(orphans, b)
		}
		return nil
	})
	if err != nil {
		return err
	}
	var batch []*v1.PackageVersion
	var p Progress
	for _, b := range orphans {
		v, err := identify(ctx, blobs, b, j)
		if err != nil || v == nil {
			continue // not a package archive (an index file, a shard...)
		}
		if _, err := cat.Version(ctx, j.Channel, v.Platform, v.Filename); err == nil {
			continue
		}
		if a, ok := blobs.(interface {
			Adopt(context.Context, cid.Cid) (store.BlobInfo, error)
		}); ok {
			// Verified now under the CID's lock: a sweep that marked
			// before this record commits leaves the blob alone.
			if _, err := a.Adopt(ctx, b.CID); err != nil {
				continue
			}
		}
		batch = append(batch, v)
		p.FilesDone++
		p.BytesDone += v.Size
		p.Current = v.Platform + "/" + v.Filename
		Report(ctx, p)
		if len(batch) == 500 {
			if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: batch, OwnerId: j.OwnerId}}}); err != nil {
				return err
			}
			batch = nil
		}
	}
	if len(batch) == 0 {
		return nil
	}
	_, err = prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: batch, OwnerId: j.OwnerId}}})
	return err
}

// identify turns a blob into a package record if it is a valid archive.
func identify(ctx context.Context, blobs Blobs, b store.BlobInfo, j *v1.Job) (*v1.PackageVersion, error) {
	blob, err := blobs.Open(ctx, b.CID)
	if err != nil {
		return nil, err
	}
	defer blob.Close()
	filename, err := conda.Identify(blob, b.Size)
	if err != nil {
		return nil, err
	}
	info, err := conda.ReadPackage(blob, b.Size, filename)
	if err != nil {
		return nil, err
	}
	d, err := conda.HashReader(io.NewSectionReader(blob, 0, b.Size))
	if err != nil {
		return nil, err
	}
	v := catalog.NewPackageVersion(j.Channel, conda.NewRecord(info, d), conda.ChannelMeta(info), j.OwnerId)
	return v, nil
}

func reread(ctx context.Context, blobs Blobs, v *v1.PackageVersion) (*v1.PackageVersion, error) {
	c, err := store.CIDFromHex(v.Sha256)
	if err != nil {
		return nil, err
	}
	b, err := blobs.Open(ctx, c)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	info, err := conda.ReadPackage(b, b.Info.Size, v.Filename)
	if err != nil {
		return nil, err
	}
	fields, err := conda.DecodeRecordFields(v.RecordJson)
	if err != nil {
		return nil, err
	}
	var d conda.Digests
	d.Size = b.Info.Size
	copy(d.SHA256[:], b.Info.SHA256)
	if m, ok := fields["md5"].(string); ok {
		if raw, err := hex.DecodeString(m); err == nil && len(raw) == len(d.MD5) {
			copy(d.MD5[:], raw)
		}
	}
	rec := conda.NewRecord(info, d)
	nv := proto.Clone(v).(*v1.PackageVersion)
	nv.RecordJson = conda.EncodeRecordFields(rec.Fields)
	if meta := conda.ChannelMeta(info); meta != nil {
		nv.AboutJson = conda.EncodeRecordFields(meta)
	}
	return nv, nil
}

// Cleanup is the cleanup (dry=false) and cleanup_dry_run action: it removes
// packages that have no files left (dry run: only logs them).
func Cleanup(cat *catalog.Catalog, prop Proposer, dry bool, r *Runner) Action {
	return func(ctx context.Context, j *v1.Job) error {
		pkgs, err := cat.Packages(ctx, j.Channel)
		if err != nil {
			return err
		}
		for _, p := range pkgs {
			vers, err := cat.Versions(ctx, j.Channel, p.Name)
			if err != nil {
				return err
			}
			if len(vers) > 0 {
				continue
			}
			r.log.Info("package without files", "channel", j.Channel, "package", p.Name, "dry_run", dry)
			if dry {
				continue
			}
			if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeletePackage{DeletePackage: &v1.DeletePackageOp{Channel: j.Channel, Name: p.Name}}}); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
		}
		return nil
	}
}
