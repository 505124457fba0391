package conda

import (
	"archive/tar"
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/condamesh/condamesh/conda/condatest"
	"github.com/klauspost/compress/zstd"
)

func verifyPkg(b []byte, fn string, opt VerifyOptions) (*PackageInfo, error) {
	return VerifyPackage(bytes.NewReader(b), int64(len(b)), fn, opt)
}

// randomPayload is incompressible, so cutting an archive at a fraction of
// its length cuts the payload.
func randomPayload(n int) string {
	rnd := rand.New(rand.NewPCG(3, 4))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return string(b)
}

// TestVerifyPackage: VerifyPackage refuses what hides after the info
// files (issue 9 point 24: ReadPackage stops once it has them, so such
// uploads were accepted), and accepts what ReadPackage accepts otherwise.
func TestVerifyPackage(t *testing.T) {
	base := testSpec() // has run_exports.json: ReadPackage stops early
	base.Files["share/big.bin"] = randomPayload(256 << 10)
	trailing := func(m condatest.Member) condatest.Spec {
		s := base
		s.Trailing = append(s.Trailing, m)
		return s
	}
	pkgEntry := "pkg-" + condatest.Filename(base, "") + ".tar.zst"
	zstdOf := func(b []byte) []byte {
		enc, _ := zstd.NewWriter(nil)
		defer enc.Close()
		return enc.EncodeAll(b, nil)
	}
	type tc struct {
		name string
		ext  string
		data func(t *testing.T) []byte
		opt  VerifyOptions
		want error  // nil: accepted
		msg  string // in the error
	}
	var cases []tc
	for _, ext := range []string{ExtTarBz2, ExtConda} {
		cases = append(cases,
			tc{"valid", ext, func(t *testing.T) []byte { return build(t, base, ext) }, VerifyOptions{}, nil, ""},
			tc{"escaping member last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "../../evil", Content: "x"}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "escapes"},
			tc{"absolute member last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "/etc/evil", Content: "x"}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "absolute"},
			tc{"escaping symlink last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "lib/l", Type: tar.TypeSymlink, Linkname: "../../x"}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "outside"},
			tc{"escaping hard link last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "lib/h", Type: tar.TypeLink, Linkname: "../x"}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "hard link"},
			tc{"fifo last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "p", Type: tar.TypeFifo}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "special"},
			tc{"unknown type last", ext, func(t *testing.T) []byte {
				return build(t, trailing(condatest.Member{Name: "z", Type: 'Z'}), ext)
			}, VerifyOptions{}, ErrUnsafeArchive, "unsupported type"},
			tc{"unpacks beyond the bound", ext, func(t *testing.T) []byte { return build(t, base, ext) },
				VerifyOptions{MaxUnpacked: 100 << 10}, ErrBadArchive, "unpacks to more than"},
		)
	}
	cases = append(cases,
		tc{"truncated at 60% after its info files", ExtTarBz2, func(t *testing.T) []byte {
			// Several bzip2 blocks (900 kB each): the info files are
			// whole in the first, the cut is in a later one.
			s := base
			s.Files = map[string]string{"share/big.bin": randomPayload(3 << 20)}
			b := build(t, s, ExtTarBz2)
			return b[:len(b)*6/10]
		}, VerifyOptions{}, ErrBadArchive, "truncated"},
		tc{"garbage after the bzip2 stream", ExtTarBz2, func(t *testing.T) []byte {
			return append(build(t, base, ExtTarBz2), "garbage"...)
		}, VerifyOptions{}, ErrBadArchive, ""},
		tc{"pkg component truncated at 60%", ExtConda, func(t *testing.T) []byte {
			return condatest.ReplaceCondaEntry(t, build(t, base, ExtConda), pkgEntry, func(b []byte) []byte { return b[:len(b)*6/10] })
		}, VerifyOptions{}, ErrBadArchive, ""},
		tc{"pkg component not zstd", ExtConda, func(t *testing.T) []byte {
			return condatest.ReplaceCondaEntry(t, build(t, base, ExtConda), pkgEntry, func([]byte) []byte { return []byte("plain bytes") })
		}, VerifyOptions{}, ErrBadArchive, ""},
		tc{"garbage after the pkg zstd frame", ExtConda, func(t *testing.T) []byte {
			return condatest.ReplaceCondaEntry(t, build(t, base, ExtConda), pkgEntry, func(b []byte) []byte { return append(b, "garbage"...) })
		}, VerifyOptions{}, ErrBadArchive, ""},
		tc{"pkg component a truncated tar", ExtConda, func(t *testing.T) []byte {
			return condatest.ReplaceCondaEntry(t, build(t, base, ExtConda), pkgEntry, func(b []byte) []byte {
				raw, err := zstd.NewReader(nil)
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				tarBytes, err := raw.DecodeAll(b, nil)
				if err != nil {
					t.Fatal(err)
				}
				return zstdOf(tarBytes[:len(tarBytes)*6/10])
			})
		}, VerifyOptions{}, ErrBadArchive, ""},
		tc{"extra zip entry with a bad CRC-32", ExtConda, func(t *testing.T) []byte {
			b := condatest.ReplaceCondaEntry(t, build(t, base, ExtConda), "extra.txt", func([]byte) []byte { return []byte("extra entry bytes") })
			i := bytes.Index(b, []byte("extra entry bytes"))
			b[i] ^= 0xff
			return b
		}, VerifyOptions{}, ErrBadArchive, "checksum"},
	)
	for _, c := range cases {
		t.Run(c.ext+" "+c.name, func(t *testing.T) {
			b := c.data(t)
			fn := condatest.Filename(base, c.ext)
			info, err := verifyPkg(b, fn, c.opt)
			if c.want == nil {
				if err != nil {
					t.Fatalf("VerifyPackage: %v", err)
				}
				if info.Index["name"] != base.Name || info.RunExports == nil {
					t.Errorf("info = %+v", info)
				}
				return
			}
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("VerifyPackage: err = %v, want %v containing %q", err, c.want, c.msg)
			}
			// ReadPackage reads only the metadata: it does not look there.
			if _, err := readPkg(b, fn); err == nil {
				t.Logf("ReadPackage (metadata only) accepts it")
			}
		})
	}
}
