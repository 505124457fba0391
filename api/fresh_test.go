package api_test

import (
	"fmt"
	"github.com/condamesh/condamesh/node/nodetest"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

// TestReadYourWrites uploads and deletes in a loop and checks every
// following repodata.json fetch reflects the write (the served index is
// never older than an acknowledged change).
func TestReadYourWrites(t *testing.T) { inHTTPModes(t, testReadYourWrites) }

func testReadYourWrites(t *testing.T, mode ...nodetest.Option) {
	e := start(t, mode...)
	e.newChannel(t, "ryw", false, admin)
	for i := range 60 {
		spec := pkgSpec(fmt.Sprintf("ryw%d", i), "1.0", "linux-64")
		fn := condatest.Filename(spec, ".conda")
		e.upload(t, admin, "ryw", fn, condatest.Conda(t, spec)).want(t, 201)
		if _, ok := e.repodata(t, "ryw", "linux-64", "")[fn]; !ok {
			t.Fatalf("iteration %d: repodata lacks the upload just acknowledged", i)
		}
		if i%3 == 0 {
			e.do(t, "DELETE", "/api/channels/ryw/packages/"+spec.Name, admin, nil, nil).want(t, 200)
			if _, ok := e.repodata(t, "ryw", "linux-64", "")[fn]; ok {
				t.Fatalf("iteration %d: repodata still lists a deleted package", i)
			}
		}
	}
}
