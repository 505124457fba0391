package conda

import (
	"bytes"
	"errors"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
)

func TestIdentify(t *testing.T) {
	spec := condatest.Spec{Name: "ident", Version: "1.2", Build: "py_0", Subdir: "linux-64"}
	for ext, b := range map[string][]byte{ExtConda: condatest.Conda(t, spec), ExtTarBz2: condatest.TarBz2(t, spec)} {
		got, err := Identify(bytes.NewReader(b), int64(len(b)))
		if err != nil || got != "ident-1.2-py_0"+ext {
			t.Fatalf("%s: Identify = %q, %v", ext, got, err)
		}
		if _, err := ReadPackage(bytes.NewReader(b), int64(len(b)), got); err != nil {
			t.Fatalf("%s: identified name does not validate: %v", ext, err)
		}
	}
	for _, junk := range [][]byte{nil, []byte("hello world"), []byte("BZh9 not really"), []byte("PK\x03\x04garbage")} {
		if _, err := Identify(bytes.NewReader(junk), int64(len(junk))); !errors.Is(err, ErrBadArchive) && !errors.Is(err, ErrBadIndex) && !errors.Is(err, ErrMissingIndex) {
			t.Errorf("Identify(%q) = %v", junk, err)
		}
	}
}

// FuzzIdentify feeds arbitrary bytes to Identify (blobs of unknown origin):
// it must never panic, and a name it returns must parse.
func FuzzIdentify(f *testing.F) {
	spec := condatest.Spec{Name: "seed", Version: "1", Build: "0"}
	f.Add(condatest.Conda(f, spec))
	f.Add(condatest.TarBz2(f, spec))
	f.Add([]byte("PK\x03\x04"))
	f.Add([]byte("BZh91AY&SY"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := Identify(bytes.NewReader(b), int64(len(b)))
		if err == nil {
			if _, perr := ParseFilename(name); perr != nil {
				t.Fatalf("Identify returned unparseable %q", name)
			}
		}
	})
}
