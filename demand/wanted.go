package demand

import (
	"cmp"
	"slices"
)

// Wanted is what `oci-proxy sync --demand` copies into one mirror: the configured repositories
// whose misses there reached the minimum, and, for the report, those that did not.
type Wanted struct {
	Mirror string       `json:"mirror"`
	Copy   []RepoDemand `json:"copy"`            // misses >= the minimum: copied
	Below  []RepoDemand `json:"below,omitempty"` // some misses, fewer than the minimum
}

// RepoDemand is a repository's misses at a mirror.
type RepoDemand struct {
	Repository string  `json:"repository"`
	Misses     float64 `json:"misses"`
}

// Want decides, for each mirror of mirrors (the `sync: demand` ones), which of repos (the
// configured sync.repositories names) to copy: those with at least min misses there in d.
// Misses of Other, of unconfigured repositories or of other mirrors are ignored. The result has
// one entry per mirror, in the order given; repositories most missed first.
func Want(d Data, mirrors, repos []string, min float64) []Wanted {
	byRepo := d.MissesByRepository()
	out := make([]Wanted, 0, len(mirrors))
	for _, m := range mirrors {
		w := Wanted{Mirror: m, Copy: []RepoDemand{}}
		for _, r := range repos {
			n := byRepo[[2]string{m, r}]
			switch {
			case n <= 0:
			case n >= min:
				w.Copy = append(w.Copy, RepoDemand{Repository: r, Misses: n})
			default:
				w.Below = append(w.Below, RepoDemand{Repository: r, Misses: n})
			}
		}
		byMisses := func(a, b RepoDemand) int {
			return cmp.Or(cmp.Compare(b.Misses, a.Misses), cmp.Compare(a.Repository, b.Repository))
		}
		slices.SortFunc(w.Copy, byMisses)
		slices.SortFunc(w.Below, byMisses)
		out = append(out, w)
	}
	return out
}
