package catalog_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/catalog"
	"github.com/condamesh/condamesh/conda"
	v1 "github.com/condamesh/condamesh/gen/condamesh/v1"
	"github.com/condamesh/condamesh/store"
)

// BenchmarkPutVersions10k applies one command publishing 10,000 package
// versions (1,000 packages) into a new channel: the last step of a mirror
// sync, done by every node's state machine.
func BenchmarkPutVersions10k(b *testing.B) {
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cat := catalog.New(st, nil)
	idx := uint64(0)
	apply := func(cmd *v1.Command) {
		idx++
		cmd.TimeUnixNano = 1_700_000_000_000_000_000 + int64(idx)
		if _, err := cat.Apply(context.Background(), idx, cmd); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		ch := fmt.Sprintf("c%d", i)
		apply(&v1.Command{Op: &v1.Command_CreateChannel{CreateChannel: &v1.CreateChannelOp{Channel: &v1.Channel{Name: ch}}}})
		vers := make([]*v1.PackageVersion, 0, 10000)
		for k := range 10000 {
			name := fmt.Sprintf("pkg-%04d", k%1000)
			rec := conda.Record{Filename: fmt.Sprintf("%s-1.%d-0.conda", name, k), Subdir: "linux-64", Fields: map[string]any{
				"name": name, "version": fmt.Sprintf("1.%d", k), "build": "0", "sha256": fmt.Sprintf("%064x", k), "md5": fmt.Sprintf("%032x", k), "size": int64(900 + k),
				"depends": []any{"python >=3.8", "libzlib >=1.2.13,<2.0a0"}, "subdir": "linux-64"}}
			vers = append(vers, catalog.NewPackageVersion(ch, rec, nil, ""))
		}
		b.StartTimer()
		apply(&v1.Command{Op: &v1.Command_PutVersions{PutVersions: &v1.PutVersionsOp{Versions: vers, Force: true, OwnerId: "u"}}})
	}
}
