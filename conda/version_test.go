package conda

import (
	"slices"
	"testing"
)

func TestCompareVersions(t *testing.T) {
	cases := []struct {
		a, b string
		want int
	}{
		{"1.10", "1.9", 1},
		{"1.0", "1.0.1", -1},
		{"1.0a", "1.0", -1},
		{"2!1.0", "3.0", 1},
		{"1.0", "1.0.0", 0},
		{"1.0", "1.0", 0},
		{"1.1.RC1", "1.1.rc1", 0},
		{"1.0+2", "1.0+1", 1},
		{"1.0+1", "1.0", 1},
		{"1.0+local", "1.0", -1}, // text sorts before the implicit 0, as in conda
		{"1.0.post1", "1.0", 1},
		{"1.0dev1", "1.0a1", -1},
		{"1.0.dev1", "1.0a1", 1},
		{"1.1_", "1.1a1", -1},
		{"1.1dev1", "1.1_", -1},
		{"1.1_", "1.1", -1},
		{"0.960923", "0.9.6", 1},
		{"20240101", "9999", 1},
		{"1.01", "1.1", 0},
		{"123456789012345678901234567890", "123456789012345678901234567889", 1},
		{"1-2", "1_2", 0},
		{"1.0rc1", "1.0", -1},
		{"1.0b1", "1.0rc1", -1},
		{"0!1.0", "1.0", 0},
	}
	// Parsed into reused storage (as Latest.AddPair does), in turn
	// longer and shorter versions compare the same.
	var pa, pb parsedVersion
	for _, tc := range cases {
		parseVersionInto(&pa, tc.a)
		parseVersionInto(&pb, tc.b)
		if got := compareParsed(pa, pb); got != tc.want {
			t.Errorf("reused: %q vs %q = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := CompareVersions(tc.b, tc.a); got != -tc.want {
			t.Errorf("CompareVersions(%q, %q) = %d, want %d", tc.b, tc.a, got, -tc.want)
		}
	}
}

// TestVersionOrderDocs checks the ordering example from conda's
// VersionOrder documentation.
func TestVersionOrderDocs(t *testing.T) {
	// Each inner slice holds versions that compare equal; groups ascend.
	groups := [][]string{
		{"0.4", "0.4.0"},
		{"0.4.1.rc", "0.4.1.RC"},
		{"0.4.1"},
		{"0.5a1"},
		{"0.5b3"},
		{"0.5C1"},
		{"0.5"},
		{"0.9.6"},
		{"0.960923"},
		{"1.0"},
		{"1.1dev1"},
		{"1.1_"},
		{"1.1a1"},
		{"1.1.0dev1", "1.1.dev1"},
		{"1.1.a1"},
		{"1.1.0rc1"},
		{"1.1.0", "1.1"},
		{"1.1.0post1", "1.1.post1"},
		{"1.1post1"},
		{"1996.07.12"},
		{"1!0.4.1"},
		{"1!3.1.1.6"},
		{"2!0.4.1"},
	}
	for i, g := range groups {
		for _, a := range g {
			for _, b := range g {
				if c := CompareVersions(a, b); c != 0 {
					t.Errorf("CompareVersions(%q, %q) = %d, want 0", a, b, c)
				}
			}
			for _, later := range groups[i+1:] {
				for _, b := range later {
					if c := CompareVersions(a, b); c != -1 {
						t.Errorf("CompareVersions(%q, %q) = %d, want -1", a, b, c)
					}
				}
			}
		}
	}
	var flat []string
	for _, g := range groups {
		flat = append(flat, g[0])
	}
	shuffled := slices.Clone(flat)
	slices.Reverse(shuffled)
	slices.SortFunc(shuffled, CompareVersions)
	if !slices.Equal(shuffled, flat) {
		t.Errorf("sorted = %v, want %v", shuffled, flat)
	}
}
