package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
	"google.golang.org/protobuf/proto"
)

// Catalog reads and (through Apply) writes the replicated metadata.
type Catalog struct {
	st       *store.Store
	onChange func(channel string)

	// Channels and proxy entries are read on every /get request: they
	// are cached (by store key, at most cacheMax records), and the cache is
	// dropped after every applied command or restore (epoch).
	cacheMu sync.RWMutex
	epoch   uint64
	cache   map[string]proto.Message
}

const cacheMax = 1 << 16

// Invalidate drops cached reads; call it after the store changed under the
// catalog (snapshot restore). Apply calls it itself.
func (c *Catalog) Invalidate() {
	c.cacheMu.Lock()
	c.epoch++
	c.cache = nil
	c.cacheMu.Unlock()
}

// cachedGet reads the record at key into a new message (from newMsg), or
// returns the cached one. The result is shared: callers must not modify it.
func cachedGet[M proto.Message](ctx context.Context, c *Catalog, key []byte, newMsg func() M) (M, error) {
	c.cacheMu.RLock()
	cached, ok := c.cache[string(key)]
	epoch := c.epoch
	c.cacheMu.RUnlock()
	if ok {
		return cached.(M), nil
	}
	m := newMsg()
	if err := c.get(ctx, key, m); err != nil {
		var zero M
		return zero, err
	}
	c.cacheMu.Lock()
	if c.epoch == epoch { // nothing applied since the read: m is current
		if c.cache == nil || len(c.cache) >= cacheMax {
			c.cache = map[string]proto.Message{}
		}
		c.cache[string(key)] = m
	}
	c.cacheMu.Unlock()
	return m, nil
}

// New returns a catalog on st. onChange, if set, is called after each applied
// command for every channel whose published indexes may have changed; it must
// not block.
func New(st *store.Store, onChange func(channel string)) *Catalog {
	return &Catalog{st: st, onChange: onChange}
}

func (c *Catalog) get(ctx context.Context, key []byte, m proto.Message) error {
	v, err := c.st.Get(ctx, key)
	return decode(key, v, err, m)
}

// decode turns the result of a store read into m, mapping a missing key to
// ErrNotFound.
func decode(key, v []byte, err error, m proto.Message) error {
	if errors.Is(err, store.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	if err := proto.Unmarshal(v, m); err != nil {
		return fmt.Errorf("catalog: corrupt record %q: %w", key, err)
	}
	return nil
}

func list[T any, P interface {
	*T
	proto.Message
}](ctx context.Context, st *store.Store, prefix []byte, keep func(P) bool) ([]P, error) {
	var out []P
	err := st.Scan(ctx, prefix, func(_, v []byte) error {
		m := P(new(T))
		if err := proto.Unmarshal(v, m); err != nil {
			return fmt.Errorf("catalog: corrupt record under %q: %w", prefix, err)
		}
		if keep == nil || keep(m) {
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// Channel returns a channel by case-insensitive name. The result is the
// caller's to modify.
func (c *Catalog) Channel(ctx context.Context, name string) (*v1.Channel, error) {
	ch, err := c.ChannelView(ctx, name)
	if err != nil {
		return nil, err
	}
	return proto.Clone(ch).(*v1.Channel), nil
}

// ChannelView is Channel without the copy, for the read path: the record
// is shared with every other reader and must not be modified.
func (c *Catalog) ChannelView(ctx context.Context, name string) (*v1.Channel, error) {
	return cachedGet(ctx, c, kChannel(name), func() *v1.Channel { return &v1.Channel{} })
}

// Channels returns every channel in key order.
func (c *Catalog) Channels(ctx context.Context) ([]*v1.Channel, error) {
	return list[v1.Channel](ctx, c.st, []byte("m/ch/"), nil)
}

// Package returns a package of a channel.
func (c *Catalog) Package(ctx context.Context, ch, name string) (*v1.Package, error) {
	var p v1.Package
	if err := c.get(ctx, kPackage(ch, name), &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Packages returns the packages of a channel sorted by name.
func (c *Catalog) Packages(ctx context.Context, ch string) ([]*v1.Package, error) {
	return list[v1.Package](ctx, c.st, kPackages(ch), nil)
}

// Version returns one package file.
func (c *Catalog) Version(ctx context.Context, ch, subdir, filename string) (*v1.PackageVersion, error) {
	var v v1.PackageVersion
	if err := c.get(ctx, kVersion(ch, subdir, filename), &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// SubdirVersions returns the package files of one subdir sorted by filename.
func (c *Catalog) SubdirVersions(ctx context.Context, ch, subdir string) ([]*v1.PackageVersion, error) {
	return list[v1.PackageVersion](ctx, c.st, kSubdirVersions(ch, subdir), nil)
}

// Versions returns the files of a package (all if pkg is empty), sorted by subdir then filename.
func (c *Catalog) Versions(ctx context.Context, ch, pkg string) ([]*v1.PackageVersion, error) {
	return list[v1.PackageVersion](ctx, c.st, kVersions(ch), func(v *v1.PackageVersion) bool {
		return pkg == "" || v.Package == pkg
	})
}

// Subdirs returns the subdirs that have (or had) versions, plus noarch, sorted.
func (c *Catalog) Subdirs(ctx context.Context, ch string) ([]string, error) {
	set := map[string]bool{"noarch": true}
	prefix := kGens(ch)
	err := c.st.Scan(ctx, prefix, func(k, _ []byte) error {
		set[string(k[len(prefix):])] = true
		return nil
	})
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out, err
}

// Generation returns the change counter of a channel's subdir; it grows with
// every change to that subdir's package files.
func (c *Catalog) Generation(ctx context.Context, ch, subdir string) (uint64, error) {
	v, err := c.st.Get(ctx, kGen(ch, subdir))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	return u64(v), err
}

// ChannelGeneration returns the channel-wide change counter.
func (c *Catalog) ChannelGeneration(ctx context.Context, ch string) (uint64, error) {
	v, err := c.st.Get(ctx, kChGen(ch))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	return u64(v), err
}

// User returns a user by id.
func (c *Catalog) User(ctx context.Context, id string) (*v1.User, error) {
	var u v1.User
	if err := c.get(ctx, kUser(id), &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// UserByName returns a user by username.
func (c *Catalog) UserByName(ctx context.Context, username string) (*v1.User, error) {
	id, err := c.st.Get(ctx, kUsername(username))
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return c.User(ctx, string(id))
}

// APIKey returns a key by its stored hash (secret.KeyHasher).
func (c *Catalog) APIKey(ctx context.Context, hash string) (*v1.ApiKey, error) {
	var k v1.ApiKey
	if err := c.get(ctx, kKey(hash), &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// APIKeys returns every key kept (deleted ones included) for which keep is true.
func (c *Catalog) APIKeys(ctx context.Context, keep func(*v1.ApiKey) bool) ([]*v1.ApiKey, error) {
	return list[v1.ApiKey](ctx, c.st, []byte("m/key/"), keep)
}

// Member returns a channel membership (pkg empty) or a package membership.
func (c *Catalog) Member(ctx context.Context, ch, pkg, userID string) (*v1.Member, error) {
	key := kMember(ch, userID)
	if pkg != "" {
		key = kPkgMember(ch, pkg, userID)
	}
	var m v1.Member
	if err := c.get(ctx, key, &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Members returns the channel's memberships (pkg empty) or a package's.
func (c *Catalog) Members(ctx context.Context, ch, pkg string) ([]*v1.Member, error) {
	if pkg != "" {
		return list[v1.Member](ctx, c.st, kPkgMembers(ch, pkg), nil)
	}
	return list[v1.Member](ctx, c.st, kMembers(ch), nil)
}

// UserChannels returns the lower-cased names of channels where userID has a
// channel role.
func (c *Catalog) UserChannels(ctx context.Context, userID string) (map[string]bool, error) {
	out := map[string]bool{}
	err := c.st.Scan(ctx, []byte("m/mem/"), func(k, _ []byte) error {
		rest := strings.TrimPrefix(string(k), "m/mem/")
		if i := strings.LastIndexByte(rest, '/'); i > 0 && rest[i+1:] == userID {
			out[rest[:i]] = true
		}
		return nil
	})
	return out, err
}

// Users returns every user (anonymous key users included) for which keep
// is true, in id order.
func (c *Catalog) Users(ctx context.Context, keep func(*v1.User) bool) ([]*v1.User, error) {
	return list[v1.User](ctx, c.st, []byte("m/user/"), keep)
}

// UserMembers returns the memberships of userID: its channel roles, then
// its package roles, each in channel (and package) key order.
func (c *Catalog) UserMembers(ctx context.Context, userID string) ([]*v1.Member, error) {
	mine := func(m *v1.Member) bool { return m.UserId == userID }
	chans, err := list[v1.Member](ctx, c.st, []byte("m/mem/"), mine)
	if err != nil {
		return nil, err
	}
	pkgs, err := list[v1.Member](ctx, c.st, []byte("m/pmem/"), mine)
	return append(chans, pkgs...), err
}

// Job returns a job.
func (c *Catalog) Job(ctx context.Context, id int64) (*v1.Job, error) {
	var j v1.Job
	if err := c.get(ctx, kJob(id), &j); err != nil {
		return nil, err
	}
	return &j, nil
}

// Jobs returns jobs in id order for which keep is true.
func (c *Catalog) Jobs(ctx context.Context, keep func(*v1.Job) bool) ([]*v1.Job, error) {
	return list[v1.Job](ctx, c.st, []byte("m/job/"), keep)
}

// Tasks returns the tasks of a job in id order.
func (c *Catalog) Tasks(ctx context.Context, jobID int64) ([]*v1.Task, error) {
	return list[v1.Task](ctx, c.st, kTasks(jobID), nil)
}

// aboutFields extracts summary, description and home from about.json bytes.
func aboutFields(about []byte) (summary, description, home string) {
	var m map[string]any
	if json.Unmarshal(about, &m) != nil {
		return "", "", ""
	}
	s, _ := m["summary"].(string)
	d, _ := m["description"].(string)
	h, _ := m["home"].(string)
	return s, d, h
}

// EachVersionSHA256 calls fn with the sha256 (hex) of every package file of
// every channel: the blobs the catalog references.
func (c *Catalog) EachVersionSHA256(ctx context.Context, fn func(sha256Hex string) error) error {
	return c.st.Scan(ctx, []byte("m/ver/"), func(_, v []byte) error {
		var pv v1.PackageVersion
		if err := proto.Unmarshal(v, &pv); err != nil {
			return fmt.Errorf("catalog: corrupt package version: %w", err)
		}
		return fn(pv.Sha256)
	})
}

// ProxyEntry returns a proxy channel's cached upstream file.
// The record is shared with every other reader and must not be modified.
func (c *Catalog) ProxyEntry(ctx context.Context, ch, path string) (*v1.ProxyEntry, error) {
	return cachedGet(ctx, c, kProxy(ch, path), func() *v1.ProxyEntry { return &v1.ProxyEntry{} })
}

// EachProxyCID calls fn with the CID of every cached proxy file.
func (c *Catalog) EachProxyCID(ctx context.Context, fn func(cidString string) error) error {
	return c.st.Scan(ctx, []byte("m/proxy/"), func(_, v []byte) error {
		var e v1.ProxyEntry
		if err := proto.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("catalog: corrupt proxy entry: %w", err)
		}
		if e.Cid == "" {
			return nil
		}
		return fn(e.Cid)
	})
}

// Mirrors returns the mirrors registered with a channel.
func (c *Catalog) Mirrors(ctx context.Context, ch string) ([]*v1.ChannelMirror, error) {
	return list[v1.ChannelMirror](ctx, c.st, kMirrors(ch), nil)
}

// Mirror returns one registered mirror.
func (c *Catalog) Mirror(ctx context.Context, ch, id string) (*v1.ChannelMirror, error) {
	var m v1.ChannelMirror
	if err := c.get(ctx, kMirror(ch, id), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

// Downloads calls fn for every non-zero download bucket of a channel in one
// period (H, D, M or Y), ordered by bucket, platform, filename.
func (c *Catalog) Downloads(ctx context.Context, ch, period string, fn func(bucket int64, platform, filename string, count int64) error) error {
	prefix := kDownloads(ch, period)
	return c.st.Scan(ctx, prefix, func(k, v []byte) error {
		rest := strings.SplitN(string(k[len(prefix):]), "/", 3)
		if len(rest) != 3 {
			return nil
		}
		bucket, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil {
			return nil
		}
		return fn(bucket, rest[1], rest[2], int64(u64(v)))
	})
}

// DownloadTotal returns the all-time downloads of one file.
func (c *Catalog) DownloadTotal(ctx context.Context, ch, platform, filename string) (int64, error) {
	v, err := c.st.Get(ctx, kDownloadTotal(ch, platform, filename))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	return int64(u64(v)), err
}

// MirrorDownloads calls fn for every hourly count pulled from one mirror.
func (c *Catalog) MirrorDownloads(ctx context.Context, mirrorID string, fn func(ch string, hour int64, platform, filename string, count int64) error) error {
	prefix := kMirrorDownloads(mirrorID)
	return c.st.Scan(ctx, prefix, func(k, v []byte) error {
		rest := strings.SplitN(string(k[len(prefix):]), "/", 4)
		if len(rest) != 4 {
			return nil
		}
		hour, err := strconv.ParseInt(rest[1], 10, 64)
		if err != nil {
			return nil
		}
		return fn(rest[0], hour, rest[2], rest[3], int64(u64(v)))
	})
}

// DownloadSeq is the last download batch sequence number applied for a
// node (0: none), from which the node's counter continues after a restart.
func (c *Catalog) DownloadSeq(ctx context.Context, nodeID string) (uint64, error) {
	v, err := c.st.Get(ctx, kDownloadSeq(nodeID))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return u64(v), nil
}
