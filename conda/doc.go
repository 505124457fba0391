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
//
// Hand-written replacement of library code: VerifyPackage decodes the
// bzip2 stream of a .tar.bz2 with parallelBzip2 (bzip2.go), which splits
// the stream at its block magics and decodes the blocks on several
// goroutines with the github.com/dsnet/compress/bzip2 reader, instead of
// that reader alone. Anything it does not accept as an exact chain of
// blocks goes to the sequential reader, and FuzzBzip2Parallel holds it to
// that reader's bytes or error. Measured gain on 2 vCPU (docs/BENCHMARKS.md):
// BenchmarkVerifyTarBz2 VerifyPackage 1.17–1.66 s sequential, 0.73–0.82 s
// parallel (1.6–2.3×) on a quiet machine; a 1 GiB .tar.bz2 upload 57 s,
// against 101 s with one worker (1.76×) and 96 s for `bzip2 -t`. No gain while
// another process holds one of the two cores. VerifyOptions.Bzip2Workers
// = 1 (serve --bzip2-workers=1) turns it off.
//
// Shard indexes and shards, which may come from an upstream, are read by
// a small MessagePack reader (mpread.go) instead of
// github.com/vmihailenco/msgpack's Unmarshal, for safety, not speed: the
// library sizes maps and buffers from the lengths a header claims, so
// 18 hostile bytes made it allocate 117 MB and FuzzUpstreamShards drove
// a fuzzing worker past 9 GB. The reader checks each length against the
// bytes left and skips nested values without recursion;
// FuzzUpstreamShards holds it to the library's results on every document
// whose lengths are consistent. There is no switch back to the library:
// it would reopen that hole (TestUpstreamShardsReadWithinWhatTheyHold).
package conda
