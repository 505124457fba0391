package conda

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these (and,
// where there is one, the underlying cause), so callers can classify
// failures with errors.Is. Read errors from a caller's io.ReaderAt are
// passed through wrapped but unclassified.
var (
	// ErrBadFilename reports a package file name that is not of the form
	// name-version-build.ext or that contains unsafe characters.
	ErrBadFilename = errors.New("conda: bad package filename")
	// ErrBadArchive reports an archive that cannot be read: wrong
	// compression, truncated data, corrupt zip or tar structure, missing
	// components, or oversized metadata files.
	ErrBadArchive = errors.New("conda: bad archive")
	// ErrUnsafeArchive reports an archive member whose name or link target
	// is absolute or escapes the archive root, or that is a device node.
	ErrUnsafeArchive = errors.New("conda: unsafe archive")
	// ErrMissingIndex reports an archive without info/index.json.
	ErrMissingIndex = errors.New("conda: missing info/index.json")
	// ErrIndexMismatch reports an info/index.json whose name, version or
	// build differ from the package file name.
	ErrIndexMismatch = errors.New("conda: package file name and info files do not match")
	// ErrBadIndex reports an info/index.json that is not a JSON object or
	// lacks valid name, version, build or subdir fields.
	ErrBadIndex = errors.New("conda: bad info/index.json")
	// ErrBadRepodata reports an untrusted repodata.json document that does
	// not have the expected shape.
	ErrBadRepodata = errors.New("conda: bad repodata")
	// ErrBadGlob reports an fnmatch pattern with a likely mistake (see
	// CheckGlob).
	ErrBadGlob = errors.New("conda: bad glob")
)
