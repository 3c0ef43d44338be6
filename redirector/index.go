package redirector

import (
	"bytes"
	_ "embed"
	"html/template"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// IndexInfo describes the registry on its index page. The configuration's part (every field but
// the three functions) is rendered once, when the Handler is built; the functions are called on
// every visit and must answer from memory: a visit never makes the proxy ask a mirror anything.
type IndexInfo struct {
	Name     string       // registry host name as users type it, e.g. images.example.dev; "" = generic
	Images   []IndexImage // the repositories to show, each with its pull command
	Upstream string       // where manifests come from
	Mirrors  []IndexMirror
	// Routes describe the name prefixes with an upstream of their own, e.g.
	// "tools/ → https://ghcr.io/v2/acme/ (proxy)"; none when there is one upstream.
	Routes  []string
	Version string

	// Visitor says where the blobs of the client at addr (the address as ClientAddr finds it)
	// would go; nil leaves the visitor's section and the mirror table's "For you" column out.
	Visitor func(addr netip.Addr) IndexVisitor
	// Health reports the mirrors' health now, matched to Mirrors by name; nil, or a mirror it
	// does not name, shows "-".
	Health func() []IndexHealth
	// Misses reports demand: per mirror name, the blob requests that mirror ranked first for
	// but could not serve because it lacked the blob. nil hides the column (no demand data); a
	// mirror the map does not name shows 0.
	Misses func() map[string]uint64
}

// IndexImage is a repository on the index page.
type IndexImage struct {
	Repository string   // as clients name it, e.g. "app"
	Tag        string   // the tag of the pull command; "" pulls the client's default (latest)
	Tags       []string // the tags (or tag patterns) the mirrors keep; none means all
}

// IndexMirror is a row of the mirror table, as configured.
type IndexMirror struct {
	Name      string
	Provider  string // s3, gcs, http
	Country   string // ISO code; "" when not given
	Continent string
	Location  string // "50.10, 8.70"; "" when not given
}

// IndexHealth is a mirror's state for the page. Text is for the public: it names no error,
// bucket or host.
type IndexHealth struct {
	Mirror string
	OK     bool   // a candidate now
	Text   string // e.g. "healthy", "set aside after failures", "disabled"
}

// IndexVisitor is what the page tells a visitor about their own pulls.
type IndexVisitor struct {
	Addr      string // the address the proxy sees: the first untrusted hop
	Located   bool   // false: no network rule and no GeoIP answer
	Country   string
	Continent string
	Coords    string // "51.50,-0.13"; "" when unknown
	ASN       uint32
	Networks  []string // the tags of the network rules the address is in
	Mirror    string   // where a blob held everywhere would go; "upstream" for the upstream
	Reason    string   // its X-Mirror-Reason
	Why       string   // the reason in words
	Ranks     []IndexRank
}

// IndexRank is one mirror's place for the visitor.
type IndexRank struct {
	Mirror     string
	Position   int     // 1-based; 0 when the mirror may not serve the visitor
	Tier       string  // the rule it ranks by: network, country, continent, distance, weight
	DistanceKm float64 // -1 when unknown
	Excluded   string  // why it may not serve the visitor, when Position is 0
}

//go:embed index.html
var indexHTML string

var indexTemplate = template.Must(template.New("index").Funcs(template.FuncMap{
	"ordinal":      ordinal,
	"km":           km,
	"mirrorPlace":  mirrorPlace,
	"joinLocation": joinLocation,
}).Parse(indexHTML))

// indexStatic is the configuration's part of the page, as the "head" and "tail" templates see it.
type indexStatic struct {
	*IndexInfo
	Title string
	Host  string // in pull commands: the name, or a placeholder
}

// indexData is what "live" and "page" render.
type indexData struct {
	Static     indexStatic
	Visitor    *IndexVisitor
	Rows       []indexRow
	ShowMisses bool
}

type indexRow struct {
	Mirror *IndexMirror
	Cells  template.HTML // the configuration's cells, escaped once: "mirror-cells"
	Health IndexHealth
	Rank   *IndexRank // nil without a visitor, or when the visitor's ranks do not name it
	Chosen bool
	Misses uint64
}

// indexPage serves the index page: the parts that depend only on the configuration are rendered
// once, and a visit renders only the visitor's section and the mirror table between them.
type indexPage struct {
	info       IndexInfo
	head, tail []byte
	cells      []template.HTML // per mirror
	bufs       sync.Pool
}

func newIndexPage(info IndexInfo) *indexPage {
	p := &indexPage{info: info}
	st := p.static()
	p.head = mustRender("head", st)
	p.tail = mustRender("tail", st)
	for i := range p.info.Mirrors {
		// Safe as HTML: html/template escaped every value in it.
		p.cells = append(p.cells, template.HTML(mustRender("mirror-cells", &p.info.Mirrors[i])))
	}
	p.bufs.New = func() any { return new(bytes.Buffer) }
	return p
}

func (p *indexPage) static() indexStatic {
	st := indexStatic{IndexInfo: &p.info, Title: p.info.Name, Host: p.info.Name}
	if st.Title == "" {
		st.Title, st.Host = "Container registry", "REGISTRY"
	}
	return st
}

func mustRender(name string, data any) []byte {
	var b bytes.Buffer
	if err := indexTemplate.ExecuteTemplate(&b, name, data); err != nil {
		// The template is fixed and its data are plain values: execution cannot fail.
		panic(err)
	}
	return b.Bytes()
}

// data gathers a visit's part of the page.
func (p *indexPage) data(addr netip.Addr) indexData {
	d := indexData{Static: p.static(), ShowMisses: p.info.Misses != nil}
	if p.info.Visitor != nil {
		v := p.info.Visitor(addr)
		d.Visitor = &v
	}
	var health []IndexHealth
	if p.info.Health != nil {
		health = p.info.Health()
	}
	var misses map[string]uint64
	if p.info.Misses != nil {
		misses = p.info.Misses()
	}
	d.Rows = make([]indexRow, len(p.info.Mirrors))
	for i := range p.info.Mirrors {
		m := &p.info.Mirrors[i]
		r := indexRow{Mirror: m, Cells: p.cells[i], Health: IndexHealth{Mirror: m.Name, OK: true, Text: "-"}, Misses: misses[m.Name]}
		for _, h := range health {
			if h.Mirror == m.Name {
				r.Health = h
				break
			}
		}
		if d.Visitor != nil {
			for j := range d.Visitor.Ranks {
				if d.Visitor.Ranks[j].Mirror == m.Name {
					r.Rank = &d.Visitor.Ranks[j]
					break
				}
			}
			r.Chosen = d.Visitor.Mirror == m.Name
		}
		d.Rows[i] = r
	}
	return d
}

// serve answers GET and HEAD of the page for the client at addr. The answer depends on the visitor
// and on the mirrors' health now, so no cache may keep it.
func (p *indexPage) serve(w http.ResponseWriter, r *http.Request, addr netip.Addr) {
	b := p.bufs.Get().(*bytes.Buffer)
	defer p.bufs.Put(b)
	b.Reset()
	b.Write(p.head)
	if err := indexTemplate.ExecuteTemplate(b, "live", p.data(addr)); err != nil {
		// Only a writer's error could fail it, and a bytes.Buffer has none.
		panic(err)
	}
	b.Write(p.tail)
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Length", strconv.Itoa(b.Len()))
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}

// render is the whole page in one template execution, for tests and as the benchmark's reference.
func (p *indexPage) render(addr netip.Addr) []byte {
	return mustRender("page", p.data(addr))
}

func ordinal(n int) string {
	suffix := "th"
	switch {
	case n%100 >= 11 && n%100 <= 13:
	case n%10 == 1:
		suffix = "st"
	case n%10 == 2:
		suffix = "nd"
	case n%10 == 3:
		suffix = "rd"
	}
	return strconv.Itoa(n) + suffix
}

// km writes a distance in whole kilometres with thousands separated: "6,512 km".
func km(d float64) string {
	s := strconv.FormatFloat(d, 'f', 0, 64)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String() + " km"
}

func mirrorPlace(m *IndexMirror) string {
	var parts []string
	if m.Country != "" {
		parts = append(parts, m.Country)
	}
	if m.Continent != "" {
		parts = append(parts, m.Continent)
	}
	if m.Location != "" {
		parts = append(parts, "at "+m.Location)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// joinLocation says where the visitor is the way `oci-proxy resolve` does.
func joinLocation(v *IndexVisitor) string {
	var parts []string
	if v.Country != "" {
		parts = append(parts, "country "+v.Country)
	}
	if v.Continent != "" {
		parts = append(parts, "continent "+v.Continent)
	}
	if v.Coords != "" {
		parts = append(parts, "at "+v.Coords)
	}
	if v.ASN != 0 {
		parts = append(parts, "AS"+strconv.FormatUint(uint64(v.ASN), 10))
	}
	if len(v.Networks) > 0 {
		parts = append(parts, "networks "+strings.Join(v.Networks, ","))
	}
	return strings.Join(parts, ", ")
}
