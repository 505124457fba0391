package catalog_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/catalog"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
)

type rig struct {
	st  *store.Store
	cat *catalog.Catalog
	idx uint64
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return &rig{st: st, cat: catalog.New(st, nil)}
}

func (r *rig) apply(t *testing.T, cmd *v1.Command) {
	t.Helper()
	r.idx++
	cmd.TimeUnixNano = 1_700_000_000_000_000_000 + int64(r.idx)
	if _, err := r.cat.Apply(context.Background(), r.idx, cmd); err != nil {
		t.Fatal(err)
	}
}

func proxyEntry(cid string) *v1.Command {
	return &v1.Command{Op: &v1.Command_PutProxyEntries{PutProxyEntries: &v1.PutProxyEntriesOp{Entries: []*v1.ProxyEntry{
		{Channel: "c", Path: "linux-64/repodata.json", Cid: cid, Status: 200},
	}}}}
}

// TestReadCacheFollowsApply: the cached reads of the /get path (channels,
// proxy entries) are shared between readers, never stale after an applied
// command, never cache a miss, and Channel still hands out private copies.
func TestReadCacheFollowsApply(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	if _, err := r.cat.ChannelView(ctx, "c"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("missing channel: %v", err)
	}
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c", Ttl: 10}}}})
	a, err := r.cat.ChannelView(ctx, "C") // names are case-insensitive
	if err != nil {
		t.Fatalf("a miss was cached: %v", err)
	}
	b, _ := r.cat.ChannelView(ctx, "c")
	if a != b {
		t.Error("two reads with nothing applied in between did not share the record")
	}
	cp, _ := r.cat.Channel(ctx, "c")
	cp.Ttl = 999
	if again, _ := r.cat.ChannelView(ctx, "c"); again.Ttl != 10 {
		t.Fatalf("modifying Channel's copy changed the cached record (ttl %d)", again.Ttl)
	}
	r.apply(t, &v1.Command{Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: &v1.Channel{Name: "c", Ttl: 20, Private: true}}}})
	if after, _ := r.cat.ChannelView(ctx, "c"); after.Ttl != 20 || !after.Private {
		t.Fatalf("after an update the cache still answers ttl=%d private=%v", after.Ttl, after.Private)
	}
	if a.Ttl != 10 {
		t.Fatal("a record handed out before the update was modified in place")
	}

	if _, err := r.cat.ProxyEntry(ctx, "c", "linux-64/repodata.json"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("missing proxy entry: %v", err)
	}
	r.apply(t, proxyEntry("cid-1"))
	e1, err := r.cat.ProxyEntry(ctx, "c", "linux-64/repodata.json")
	if err != nil || e1.Cid != "cid-1" {
		t.Fatalf("proxy entry after put: %v %v", e1, err)
	}
	r.apply(t, proxyEntry("cid-2"))
	e2, _ := r.cat.ProxyEntry(ctx, "c", "linux-64/repodata.json")
	if e2.Cid != "cid-2" || e1.Cid != "cid-1" {
		t.Fatalf("replaced entry read %q (old record now %q)", e2.Cid, e1.Cid)
	}
}

// TestInvalidateAfterRestore: a store changed under the catalog (a Raft
// snapshot restore) is seen once Invalidate is called.
func TestInvalidateAfterRestore(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c", Ttl: 10}}}})
	if ch, _ := r.cat.ChannelView(ctx, "c"); ch.Ttl != 10 {
		t.Fatal("setup")
	}
	// A second catalog on the same store plays the snapshot's writer.
	other := catalog.New(r.st, nil)
	if _, err := other.Apply(ctx, r.idx+1, &v1.Command{TimeUnixNano: 1, Op: &v1.Command_UpdateChannel{UpdateChannel: &v1.UpdateChannelOp{Channel: &v1.Channel{Name: "c", Ttl: 30}}}}); err != nil {
		t.Fatal(err)
	}
	if ch, _ := r.cat.ChannelView(ctx, "c"); ch.Ttl != 10 {
		t.Fatalf("the cache was bypassed before Invalidate (ttl %d)", ch.Ttl)
	}
	r.cat.Invalidate()
	if ch, _ := r.cat.ChannelView(ctx, "c"); ch.Ttl != 30 {
		t.Fatalf("after Invalidate: ttl %d, want 30", ch.Ttl)
	}
}

// TestPutVersionsPackages: one command publishing several versions of a
// package over two platforms leaves one package record with both
// platforms and the last about data, one owner, and new generations for
// the channel and each subdir it touched (and only those).
func TestPutVersionsPackages(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
	gen := func(sd string) uint64 {
		var g uint64
		var err error
		if sd == "" {
			g, err = r.cat.ChannelGeneration(ctx, "c")
		} else {
			g, err = r.cat.Generation(ctx, "c", sd)
		}
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	before := map[string]uint64{"": gen(""), "linux-64": gen("linux-64"), "osx-64": gen("osx-64"), "noarch": gen("noarch")}
	ver := func(platform, fn, about string) *v1.PackageVersion {
		v := &v1.PackageVersion{Channel: "c", Package: "pkg", Platform: platform, Filename: fn, Sha256: "00", Size: 10}
		if about != "" {
			v.AboutJson = []byte(`{"summary":"` + about + `"}`)
		}
		return v
	}
	r.apply(t, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{OwnerId: "u1", Versions: []*v1.PackageVersion{
		ver("linux-64", "pkg-1-0.conda", "first"), ver("osx-64", "pkg-1-0.conda", ""), ver("linux-64", "pkg-2-0.conda", "last"),
	}}}})
	p, err := r.cat.Package(ctx, "c", "pkg")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Platforms) != 2 || p.Platforms[0] != "linux-64" || p.Platforms[1] != "osx-64" || p.Summary != "last" {
		t.Fatalf("package record: %+v", p)
	}
	if ms, err := r.cat.Members(ctx, "c", "pkg"); err != nil || len(ms) != 1 || ms[0].UserId != "u1" || ms[0].Role != "owner" {
		t.Fatalf("members: %v %+v", err, ms)
	}
	for sd, was := range before {
		if changed := gen(sd) != was; changed != (sd != "noarch") {
			t.Errorf("generation of %q: %d -> %d", sd, was, gen(sd))
		}
	}
	if ch, err := r.cat.Channel(ctx, "c"); err != nil || ch.Size != 30 {
		t.Fatalf("channel size: %v %+v", err, ch)
	}
}

// TestReplaceAPIKeyHash: PutApiKeyOp.replaces_hash moves a key's record
// to its new hash in one batch; moving it again, or moving a record that
// does not exist, writes nothing.
func TestReplaceAPIKeyHash(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	put := func(hash, replaces string) error {
		r.idx++
		_, err := r.cat.Apply(ctx, r.idx, &v1.Command{TimeUnixNano: 1, Op: &v1.Command_PutApiKey{PutApiKey: &v1.PutApiKeyOp{
			Key: &v1.ApiKey{KeyHash: hash, UserId: "u1", Description: "k"}, ReplacesHash: replaces,
		}}})
		return err
	}
	if err := put("old", ""); err != nil {
		t.Fatal(err)
	}
	if err := put("new", "old"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.cat.APIKey(ctx, "old"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("the replaced record is still there: %v", err)
	}
	if k, err := r.cat.APIKey(ctx, "new"); err != nil || k.Description != "k" {
		t.Fatalf("moved record: %v %v", k, err)
	}
	for _, c := range []struct{ hash, replaces string }{{"newer", "old"}, {"new", "new"}} {
		if err := put(c.hash, c.replaces); !errors.Is(err, catalog.ErrNotFound) {
			t.Errorf("move %s -> %s: %v, want ErrNotFound", c.replaces, c.hash, err)
		}
	}
	if err := put("old", ""); err != nil {
		t.Fatal(err)
	}
	if err := put("new", "old"); !errors.Is(err, catalog.ErrExists) {
		t.Errorf("move onto an existing record: %v, want ErrExists", err)
	}
	if keys, _ := r.cat.APIKeys(ctx, nil); len(keys) != 2 {
		t.Errorf("%d key records, want 2", len(keys))
	}
}

// TestLastOwnerKept: no command takes the server role owner from the last
// user who holds it; with two owners one may go.
func TestLastOwnerKept(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	put := func(id, role string) error {
		r.idx++
		_, err := r.cat.Apply(ctx, r.idx, &v1.Command{TimeUnixNano: 1, Op: &v1.Command_PutUser{PutUser: &v1.PutUserOp{User: &v1.User{Id: id, Username: id, Role: role}}}})
		return err
	}
	for _, s := range []struct {
		id, role string
		want     error
	}{
		{"a", "owner", nil},
		{"a", "maintainer", catalog.ErrLastOwner},
		{"a", "", catalog.ErrLastOwner},
		{"b", "owner", nil},
		{"a", "member", nil},
		{"b", "member", catalog.ErrLastOwner},
		{"b", "owner", nil},
	} {
		if err := put(s.id, s.role); !errors.Is(err, s.want) {
			t.Fatalf("%s -> %q: %v, want %v", s.id, s.role, err, s.want)
		}
	}
	if u, _ := r.cat.User(ctx, "b"); u.GetRole() != "owner" {
		t.Fatalf("b: %v", u)
	}
}

// TestPutVersionsOverwrites: what a PutVersions command finds already
// there (in the store, or earlier in the same command) decides between
// refusing it whole and overwriting; an overwrite keeps the creation time
// and counts the channel size once.
func TestPutVersionsOverwrites(t *testing.T) {
	ctx := context.Background()
	ver := func(pkg, fn string, size int64) *v1.PackageVersion {
		return &v1.PackageVersion{Channel: "C", Package: pkg, Platform: "linux-64", Filename: fn, Sha256: "00", Size: size}
	}
	for _, tc := range []struct {
		name     string
		force    bool
		versions []*v1.PackageVersion
		wantErr  error
		size     int64 // channel size after (the first command put a-1 of 10 bytes)
	}{
		{"new files", false, []*v1.PackageVersion{ver("b", "b-1.conda", 5), ver("a", "a-2.conda", 7)}, nil, 22},
		{"existing file refused", false, []*v1.PackageVersion{ver("b", "b-1.conda", 5), ver("a", "a-1.conda", 7)}, catalog.ErrExists, 10},
		{"twice in one command refused", false, []*v1.PackageVersion{ver("b", "b-1.conda", 5), ver("b", "b-1.conda", 6)}, catalog.ErrExists, 10},
		{"existing file forced", true, []*v1.PackageVersion{ver("a", "a-1.conda", 7)}, nil, 7},
		{"twice in one command forced", true, []*v1.PackageVersion{ver("b", "b-1.conda", 5), ver("b", "b-1.conda", 6), ver("a", "a-1.conda", 3)}, nil, 9},
		{"invalid record refuses the command", true, []*v1.PackageVersion{ver("a", "a-1.conda", 7), {Channel: "c", Package: "b"}}, catalog.ErrInvalid, 10},
		{"unknown channel refuses the command", true, []*v1.PackageVersion{ver("a", "a-1.conda", 7), {Channel: "nope", Package: "b", Platform: "noarch", Filename: "b-1.conda"}}, catalog.ErrNotFound, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.apply(t, &v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: "c"}}}})
			r.apply(t, &v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{OwnerId: "u1", Versions: []*v1.PackageVersion{ver("a", "a-1.conda", 10)}}}})
			first, err := r.cat.Version(ctx, "c", "linux-64", "a-1.conda")
			if err != nil {
				t.Fatal(err)
			}
			r.idx++
			_, err = r.cat.Apply(ctx, r.idx, &v1.Command{TimeUnixNano: 1_700_000_100_000_000_000, Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{OwnerId: "u2", Force: tc.force, Versions: tc.versions}}})
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("apply: %v, want %v", err, tc.wantErr)
			}
			if ch, err := r.cat.Channel(ctx, "c"); err != nil || ch.Size != tc.size {
				t.Fatalf("channel size: %v %d, want %d", err, ch.GetSize(), tc.size)
			}
			a1, err := r.cat.Version(ctx, "c", "linux-64", "a-1.conda")
			if err != nil || a1.CreatedUnix != first.CreatedUnix {
				t.Fatalf("a-1 after: %v %+v (created first %d)", err, a1, first.CreatedUnix)
			}
			_, err = r.cat.Package(ctx, "c", "b")
			if wantB := tc.wantErr == nil && slices.ContainsFunc(tc.versions, func(v *v1.PackageVersion) bool { return v.Package == "b" }); (err == nil) != wantB {
				t.Fatalf("package b: %v, want it %v", err, wantB)
			}
		})
	}
}
