// Package conda owns the conda package and channel formats: package file
// names, the .tar.bz2 and .conda archive layouts, the info/ metadata files,
// repodata.json (CEP-36 record layout), current_repodata.json, sharded
// repodata (CEP-16), channeldata.json (CEP-38), version ordering and the
// plain HTML listing pages, and the fnmatch globs of mirror channels'
// include and exclude lists.
//
// The package knows nothing of storage or HTTP: it reads archives from an
// io.ReaderAt and turns records into bytes. All generated documents are
// deterministic: the same set of records, in any order, yields the same
// bytes.
package conda
