package conda

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestScanShardPairsWorkers: with workers the callback gets what the scan
// on one goroutine gives it, in the same order: every record of a large
// document (both sections, chunks cut by count and by size), and up to the
// first failure in document order when a record fails its checks, when a
// file name is refused after a record that fails, and when the callback
// itself fails.
func TestScanShardPairsWorkers(t *testing.T) {
	recs := synthRecords(3000, "linux-64")
	for i := range recs {
		if i%3 == 0 { // some big records: chunks also end by size
			recs[i].Fields["description"] = strings.Repeat("x", 20_000)
		}
	}
	doc := Repodata("linux-64", recs)
	second := bytes.Index(doc, []byte(`"packages.conda"`))
	badAt := func(from int, old, new string) []byte {
		i := bytes.Index(doc[from:], []byte(old))
		return slices.Concat(doc[:from+i], []byte(new), doc[from+i+len(old):])
	}
	stopAt := fmt.Errorf("the callback stops")
	for _, tc := range []struct {
		name    string
		doc     []byte
		stopAt  int // the callback fails at this record (0: never)
		wantErr bool
	}{
		{"whole document", doc, 0, false},
		{"a record fails its checks", badAt(second, `"size":`, `"size":-`), 0, true},
		{"a record is not JSON", badAt(second, `"build_number":`, `"build_number":}`), 0, true},
		{"a bad record, then a truncated document", badAt(second, `"size":`, `"size":-`)[:len(doc)-40], 0, true},
		{"the callback fails", doc, 1234, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scan := func(workers int) ([]PairRecord, *RepodataDoc, error) {
				var out []PairRecord
				d, err := ScanShardPairs(bytes.NewReader(tc.doc), ScanOptions{Workers: workers}, func(r *PairRecord) error {
					if tc.stopAt > 0 && len(out) == tc.stopAt {
						return stopAt
					}
					c := *r
					c.Version, c.Pair, c.JSON = bytes.Clone(r.Version), bytes.Clone(r.Pair), bytes.Clone(r.JSON)
					out = append(out, c)
					return nil
				})
				return out, d, err
			}
			want, wdoc, werr := scan(1)
			if (werr != nil) != tc.wantErr {
				t.Fatalf("one goroutine: %v", werr)
			}
			for _, workers := range []int{2, 3, 8} {
				got, gdoc, gerr := scan(workers)
				if (gerr != nil) != tc.wantErr || errors.Is(werr, stopAt) != errors.Is(gerr, stopAt) || errors.Is(werr, ErrBadRepodata) != errors.Is(gerr, ErrBadRepodata) {
					t.Fatalf("%d workers: %v; one goroutine: %v", workers, gerr, werr)
				}
				if len(got) != len(want) || !reflect.DeepEqual(got, want) || !reflect.DeepEqual(gdoc, wdoc) {
					t.Fatalf("%d workers: %d records, one goroutine %d", workers, len(got), len(want))
				}
			}
			if !tc.wantErr && len(want) != len(recs) {
				t.Fatalf("%d records of %d", len(want), len(recs))
			}
		})
	}
}
