package mirrors

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/happy-turtle/oci-proxy/geo"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// Explanation is why a blob request goes where it goes: the client's location, every mirror with
// its rank or the reason it was left out, and the decision. It holds no secrets: URLs lose their
// query (where signatures live) and their user info.
type Explanation struct {
	Client ExplainedClient `json:"client"`
	// Unlocated is where the blobs of a client that cannot be located go (mirrors, upstream),
	// when this one could not be.
	Unlocated string              `json:"unlocated,omitempty"`
	Digest    string              `json:"digest"`
	Method    string              `json:"method"`
	Mirrors   []MirrorExplanation `json:"mirrors"` // in table order
	Decision  ExplainedDecision   `json:"decision"`
}

// ExplainedClient is the location the decision used.
type ExplainedClient struct {
	Addr      string   `json:"addr"`
	Known     bool     `json:"known"` // false: no GeoIP answer and no network rule
	Country   string   `json:"country,omitempty"`
	Continent string   `json:"continent,omitempty"`
	Lat       *float64 `json:"lat,omitempty"`
	Lon       *float64 `json:"lon,omitempty"`
	ASN       uint32   `json:"asn,omitempty"`
	Tags      []string `json:"tags,omitempty"`
}

// MirrorExplanation is one mirror's part in the decision.
type MirrorExplanation struct {
	Name     string `json:"name"`
	Provider string `json:"provider,omitempty"`
	Weight   int    `json:"weight"`
	// Position is the 1-based place in the ranking; 0 when the mirror was left out before it.
	Position   int      `json:"position,omitempty"`
	Tier       string   `json:"tier,omitempty"` // the best rule it won: network, country, continent, distance, weight
	DistanceKm *float64 `json:"distance_km,omitempty"`
	Score      float64  `json:"score,omitempty"` // rendezvous score among equals; higher wins
	Presence   string   `json:"presence,omitempty"`
	Cached     bool     `json:"cached,omitempty"` // the presence answer came from the cache
	Excluded   string   `json:"excluded,omitempty"`
	Chosen     bool     `json:"chosen,omitempty"`
}

// ExplainedDecision is a Decision without secrets.
type ExplainedDecision struct {
	Mirror  string    `json:"mirror"` // upstream.XMirror for the upstream
	Reason  string    `json:"reason"`
	URL     string    `json:"url,omitempty"` // scheme://host/path only
	Signed  bool      `json:"signed,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	Size    int64     `json:"size"`
	// Missed is the first-ranked mirror when it lacked the blob (Decision.Missed).
	Missed string `json:"missed,omitempty"`
}

// Explain decides like Choose and records why. Unlike Choose it checks presence on every ranked
// mirror, not only up to the first that holds the blob; the checks go through the same cache.
// Mirrors with credentials that no probe has asked about yet are asked first, so that an
// explanation made right after the configuration was read shows which ones are refused.
func (s *Selector) Explain(ctx context.Context, q Query) Explanation {
	s.checkUnchecked(ctx)
	return s.explain(ctx, q)
}

// ExplainRanking is Explain without a blob and without any I/O: the ranking for q's client and
// the mirror a blob held everywhere would get, from the state the selector already has (health
// and credentials as last probed; a mirror whose credentials no probe has answered for yet counts
// as usable, as Choose treats it). q.Digest is ignored. It costs no network round trip whoever
// asks, so a public page may call it on every visit.
func (s *Selector) ExplainRanking(q Query) Explanation {
	q.Digest = oci.Digest{}
	return s.explain(context.Background(), q)
}

func (s *Selector) explain(ctx context.Context, q Query) Explanation {
	e := Explanation{Client: explainClient(q.Loc), Digest: q.Digest.String(), Method: q.Method}
	if e.Method != "HEAD" {
		e.Method = "GET"
	}
	if !q.Loc.Known() {
		e.Unlocated = s.opts.Unlocated.String()
	}
	e.Mirrors = make([]MirrorExplanation, len(s.mirrors))
	for i, m := range s.mirrors {
		e.Mirrors[i] = MirrorExplanation{Name: m.name, Provider: m.provider, Weight: m.weight}
	}
	now := s.now().UnixNano()
	cands, why := s.rank(&q, nil, &e, now)
	d := toUpstream(why)
	switch {
	case len(cands) == 0:
	case q.Digest.IsZero():
		// No blob named: rank only, and name the mirror a blob held everywhere would get.
		s.order(cands, addrHash(q.Loc.Addr), &e)
		best := cands[0]
		e.Mirrors[best.idx].Chosen = true
		d = Decision{Mirror: s.mirrors[best.idx].name, Reason: best.tier.reason(), Size: -1}
		if !q.Loc.Known() {
			d.Reason = ReasonNoGeo
		}
	default:
		d = s.walk(ctx, &q, cands, &e, now, nil)
	}
	e.Decision = explainDecision(d)
	return e
}

func explainClient(l geo.Location) ExplainedClient {
	c := ExplainedClient{
		Known:     l.Known(),
		Country:   l.Country,
		Continent: l.Continent,
		ASN:       l.ASN,
		Tags:      l.Tags,
	}
	if l.Addr.IsValid() {
		c.Addr = l.Addr.String()
	}
	if l.HasCoords {
		lat, lon := l.Lat, l.Lon
		c.Lat, c.Lon = &lat, &lon
	}
	return c
}

func explainDecision(d Decision) ExplainedDecision {
	e := ExplainedDecision{Mirror: d.Mirror, Reason: d.Reason, Size: d.Size, Expires: d.Expires, Missed: d.Missed}
	if d.Mirror == "" {
		e.Mirror = upstream.XMirror
	}
	if d.URL != nil {
		e.URL = redact(d.URL)
		e.Signed = !d.Expires.IsZero() || d.URL.RawQuery != ""
	}
	return e
}

// rankOrder puts unranked mirrors (position 0) after the ranked ones.
func rankOrder(pos int) int {
	if pos == 0 {
		return math.MaxInt
	}
	return pos
}

// redact keeps what identifies the object and drops where credentials live.
func redact(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

// WriteText writes the explanation for people, as `oci-proxy resolve` prints it.
func (e Explanation) WriteText(w io.Writer) error {
	var b strings.Builder
	c := e.Client
	addr := c.Addr
	if addr == "" {
		addr = "(no address)"
	}
	fmt.Fprintf(&b, "client    %s\n", addr)
	if !c.Known {
		b.WriteString("location  unknown")
		if e.Unlocated != "" {
			fmt.Fprintf(&b, " (unlocated: %s)", e.Unlocated)
		}
		b.WriteByte('\n')
	} else {
		var parts []string
		if c.Country != "" {
			parts = append(parts, "country "+c.Country)
		}
		if c.Continent != "" {
			parts = append(parts, "continent "+c.Continent)
		}
		if c.Lat != nil {
			parts = append(parts, fmt.Sprintf("at %.2f,%.2f", *c.Lat, *c.Lon))
		}
		if c.ASN != 0 {
			parts = append(parts, "AS"+strconv.FormatUint(uint64(c.ASN), 10))
		}
		if len(c.Tags) > 0 {
			parts = append(parts, "networks "+strings.Join(c.Tags, ","))
		}
		fmt.Fprintf(&b, "location  %s\n", strings.Join(parts, ", "))
	}
	if e.Digest == "" {
		fmt.Fprintf(&b, "blob      (none given: ranking only, presence not checked)\n")
	} else {
		fmt.Fprintf(&b, "blob      %s %s\n", e.Method, e.Digest)
	}
	d := e.Decision
	fmt.Fprintf(&b, "decision  %s (%s)\n", d.Mirror, d.Reason)
	if d.URL != "" {
		fmt.Fprintf(&b, "url       %s", d.URL)
		if d.Signed {
			if d.Expires.IsZero() {
				b.WriteString(" (signed)")
			} else {
				fmt.Fprintf(&b, " (signed, expires %s)", d.Expires.UTC().Format(time.RFC3339))
			}
		}
		b.WriteByte('\n')
	}
	if d.Size >= 0 {
		fmt.Fprintf(&b, "size      %d\n", d.Size)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RANK\tMIRROR\tTIER\tDISTANCE\tWEIGHT\tSCORE\tPRESENCE\tNOTE")
	// Ranked mirrors in their order, then the others in table order.
	rows := slices.Clone(e.Mirrors)
	slices.SortStableFunc(rows, func(a, b MirrorExplanation) int {
		return cmp.Compare(rankOrder(a.Position), rankOrder(b.Position))
	})
	for _, m := range rows {
		rank, tier, dist, score, pres := "-", "-", "-", "-", "-"
		if m.Position > 0 {
			rank, tier, score = strconv.Itoa(m.Position), m.Tier, strconv.FormatFloat(m.Score, 'f', 3, 64)
		}
		if m.DistanceKm != nil {
			dist = strconv.FormatFloat(*m.DistanceKm, 'f', 0, 64) + " km"
		}
		if m.Presence != "" {
			pres = m.Presence
			if m.Cached {
				pres += " (cached)"
			}
		}
		note := m.Excluded
		switch {
		case m.Chosen:
			note = "chosen"
		case note == "":
			note = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", rank, m.Name, tier, dist, m.Weight, score, pres, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}
