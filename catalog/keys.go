package catalog

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// ChannelKey returns the case-insensitive lookup form of a channel name.
func ChannelKey(name string) string { return strings.ToLower(name) }

func kChannel(ch string) []byte       { return []byte("m/ch/" + ChannelKey(ch)) }
func kPackage(ch, name string) []byte { return []byte("m/pkg/" + ChannelKey(ch) + "/" + name) }
func kPackages(ch string) []byte      { return []byte("m/pkg/" + ChannelKey(ch) + "/") }
func kVersions(ch string) []byte      { return []byte("m/ver/" + ChannelKey(ch) + "/") }
func kSubdirVersions(ch, sd string) []byte {
	return []byte("m/ver/" + ChannelKey(ch) + "/" + sd + "/")
}
func kVersion(ch, sd, fn string) []byte {
	return []byte("m/ver/" + ChannelKey(ch) + "/" + sd + "/" + fn)
}
func kGen(ch, sd string) []byte     { return []byte("m/gen/" + ChannelKey(ch) + "/" + sd) }
func kGens(ch string) []byte        { return []byte("m/gen/" + ChannelKey(ch) + "/") }
func kChGen(ch string) []byte       { return []byte("m/chgen/" + ChannelKey(ch)) }
func kUser(id string) []byte        { return []byte("m/user/" + id) }
func kUsername(u string) []byte     { return []byte("m/uname/" + u) }
func kKey(hash string) []byte       { return []byte("m/key/" + hash) }
func kMember(ch, uid string) []byte { return []byte("m/mem/" + ChannelKey(ch) + "/" + uid) }
func kMembers(ch string) []byte     { return []byte("m/mem/" + ChannelKey(ch) + "/") }
func kPkgMember(ch, pkg, uid string) []byte {
	return []byte("m/pmem/" + ChannelKey(ch) + "/" + pkg + "/" + uid)
}
func kPkgMembers(ch, pkg string) []byte { return []byte("m/pmem/" + ChannelKey(ch) + "/" + pkg + "/") }
func kPkgMembersAll(ch string) []byte   { return []byte("m/pmem/" + ChannelKey(ch) + "/") }
func kJob(id int64) []byte              { return []byte(fmt.Sprintf("m/job/%020d", id)) }
func kTask(job, id int64) []byte        { return []byte(fmt.Sprintf("m/task/%020d/%020d", job, id)) }
func kTasks(job int64) []byte           { return []byte(fmt.Sprintf("m/task/%020d/", job)) }
func kSeq(name string) []byte           { return []byte("m/seq/" + name) }
func kProxy(ch, path string) []byte     { return []byte("m/proxy/" + ChannelKey(ch) + "/" + path) }
func kProxies(ch string) []byte         { return []byte("m/proxy/" + ChannelKey(ch) + "/") }
func kMirror(ch, id string) []byte      { return []byte("m/mirror/" + ChannelKey(ch) + "/" + id) }
func kMirrors(ch string) []byte         { return []byte("m/mirror/" + ChannelKey(ch) + "/") }
func kMirrorURL(url string) []byte      { return []byte("m/mirrorurl/" + url) }
func kDownloads(ch, period string) []byte {
	return []byte("m/dl/" + ChannelKey(ch) + "/" + period + "/")
}
func kDownload(ch, period string, bucket int64, platform, filename string) []byte {
	return []byte(fmt.Sprintf("m/dl/%s/%s/%012d/%s/%s", ChannelKey(ch), period, bucket, platform, filename))
}
func kJobsTerm() []byte               { return []byte("m/jobsterm") }
func kDownloadSeq(node string) []byte { return []byte("m/dlseq/" + node) }
func kDownloadsAll(ch string) []byte  { return []byte("m/dl/" + ChannelKey(ch) + "/") }
func kDownloadTotal(ch, platform, filename string) []byte {
	return []byte("m/dlt/" + ChannelKey(ch) + "/" + platform + "/" + filename)
}
func kDownloadTotals(ch string) []byte { return []byte("m/dlt/" + ChannelKey(ch) + "/") }
func kMirrorDownload(mirror string, ch string, hour int64, platform, filename string) []byte {
	return []byte(fmt.Sprintf("m/dlm/%s/%s/%012d/%s/%s", mirror, ChannelKey(ch), hour, platform, filename))
}
func kMirrorDownloads(mirror string) []byte { return []byte("m/dlm/" + mirror + "/") }

func u64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func putU64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}
