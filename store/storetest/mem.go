package storetest

import (
	"context"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/condamesh/condamesh/store"
)

// OpenMem opens a store on Pebble's in-memory filesystem, closed at the
// end of the test.
func OpenMem(t testing.TB) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Dir: "/d", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}
