package catalog

import (
	"encoding/json"

	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
)

// NewPackageVersion is the catalog record of one package file of channel:
// rec is its repodata record (whose sha256, md5 and size it carries), about
// the channeldata metadata of the archive (nil when unknown), uploader the
// user credited. Uploads, mirror syncs and reindexing all build it here.
func NewPackageVersion(channel string, rec conda.Record, about map[string]any, uploader string) *v1.PackageVersion {
	fn, _ := conda.ParseFilename(rec.Filename)
	v := &v1.PackageVersion{
		Channel: channel, Package: fn.Name, Platform: rec.Subdir, Filename: rec.Filename,
		Version: rec.Version(), BuildString: fn.Build, BuildNumber: rec.BuildNumber(),
		RecordJson: conda.EncodeRecordFields(rec.Fields), UploaderId: uploader,
	}
	v.Sha256, _ = rec.Fields["sha256"].(string)
	v.Md5, _ = rec.Fields["md5"].(string)
	switch n := rec.Fields["size"].(type) {
	case int64:
		v.Size = n
	case json.Number:
		v.Size, _ = n.Int64()
	case float64:
		v.Size = int64(n)
	}
	if about != nil {
		v.AboutJson = conda.EncodeRecordFields(about)
	}
	return v
}
