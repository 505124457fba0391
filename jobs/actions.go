package jobs

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"

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
			c, err := store.CIDFromHex(v.Sha256)
			if err == nil {
				err = blobs.Verify(ctx, c)
			}
			if err == nil {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrDigestMismatch) {
				return fmt.Errorf("verify %s/%s: %w", v.Platform, v.Filename, err)
			}
			if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_DeleteVersion{DeleteVersion: &v1.DeleteVersionOp{Channel: v.Channel, Platform: v.Platform, Filename: v.Filename}}}); err != nil {
				return err
			}
		}
		return idx.Reconcile(ctx, j.Channel)
	}
}

// Reindex is the reindex action: it re-reads every package file of the
// channel from its blob and rewrites its record from the archive's info/
// files (repairing records written by older versions or by hand), in one
// command, then regenerates the indexes.
func Reindex(cat *catalog.Catalog, blobs Blobs, prop Proposer, idx Reconciler) Action {
	return func(ctx context.Context, j *v1.Job) error {
		vers, err := cat.Versions(ctx, j.Channel, "")
		if err != nil {
			return err
		}
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
		if len(fixed) > 0 {
			if _, err := prop.Propose(ctx, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: fixed, Force: true}}}); err != nil {
				return err
			}
		}
		return idx.Reconcile(ctx, j.Channel)
	}
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
