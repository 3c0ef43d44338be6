package app

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/happy-turtle/oci-proxy/config"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/redirector"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// indexInfo describes cfg's registry for the index page. A visit is answered from memory: the
// visitor's ranking comes from Selector.ExplainRanking (the decision `resolve` explains, without
// presence checks or credential probes) and the health from Selector.Health, so no visitor can
// make the proxy ask a mirror anything.
func indexInfo(cfg *config.Config, ups *upstream.Table, parts *Parts, version string) redirector.IndexInfo {
	info := redirector.IndexInfo{
		Name:     cfg.Name,
		Upstream: ups.Routes()[len(ups.Routes())-1].String(),
		Version:  version,
	}
	for _, r := range cfg.Sync.Repositories {
		info.Images = append(info.Images, redirector.IndexImage{Repository: r.Name, Tag: pullTag(r.Tags), Tags: r.Tags})
	}
	if rs := ups.Routes(); len(rs) > 1 {
		for i := range rs {
			info.Routes = append(info.Routes, describeRoute(&rs[i]))
		}
	}
	if len(cfg.Mirrors) == 0 {
		return info
	}
	for _, m := range cfg.Mirrors {
		im := redirector.IndexMirror{Name: m.Name, Provider: m.Provider.String(), Country: m.Country, Continent: m.Continent}
		if m.Location != nil {
			im.Location = fmt.Sprintf("%.2f, %.2f", m.Location.Lat, m.Location.Lon)
		}
		info.Mirrors = append(info.Mirrors, im)
	}
	sel, loc := parts.Selector, parts.Locator
	info.Health = func() []redirector.IndexHealth { return indexHealth(sel.Health()) }
	info.Visitor = func(addr netip.Addr) redirector.IndexVisitor {
		l := loc.Locate(addr) // Locate normalises the address
		return indexVisitor(sel.ExplainRanking(mirrors.Query{Loc: l}), sel.Health())
	}
	return info
}

// pullTag is the tag of an image's pull command: the first of the configured tags that is a tag
// rather than a pattern; none (the client's default, latest) when every one is a pattern or all
// tags are kept.
func pullTag(tags []string) string {
	for _, t := range tags {
		if !strings.ContainsAny(t, `*?[\`) {
			return t
		}
	}
	return ""
}

// indexHealth says each mirror's state for the public: no error text, bucket or host.
func indexHealth(hs []mirrors.MirrorHealth) []redirector.IndexHealth {
	out := make([]redirector.IndexHealth, len(hs))
	for i, h := range hs {
		ih := redirector.IndexHealth{Mirror: h.Name}
		switch {
		case !h.Enabled:
			ih.Text = "disabled"
		case h.Credentials == mirrors.CredentialsRefused:
			ih.Text = "set aside: credentials refused"
		case !h.Healthy:
			ih.Text = "set aside after " + strconv.Itoa(h.Failures) + " failed checks"
			if !h.DownUntil.IsZero() {
				ih.Text += ", retried from " + h.DownUntil.UTC().Format("15:04:05 UTC")
			}
		case !h.PacedUntil.IsZero():
			ih.OK, ih.Text = true, "healthy, asked to slow down"
		default:
			ih.OK, ih.Text = true, "healthy"
		}
		out[i] = ih
	}
	return out
}

// indexVisitor turns an explanation without a blob into the page's words. A mirror left out for
// its health is said to be set aside, not why: the reason may hold an error's text.
func indexVisitor(e mirrors.Explanation, hs []mirrors.MirrorHealth) redirector.IndexVisitor {
	c := e.Client
	v := redirector.IndexVisitor{
		Addr: c.Addr, Located: c.Known, Country: c.Country, Continent: c.Continent, ASN: c.ASN, Networks: c.Tags,
		Mirror: e.Decision.Mirror, Reason: e.Decision.Reason, Why: reasonWords(e.Decision.Reason, e.Unlocated),
	}
	if c.Lat != nil && c.Lon != nil {
		v.Coords = fmt.Sprintf("%.2f,%.2f", *c.Lat, *c.Lon)
	}
	usable := map[string]bool{}
	for _, h := range hs {
		usable[h.Name] = h.Healthy || !h.Enabled
	}
	for _, m := range e.Mirrors {
		r := redirector.IndexRank{Mirror: m.Name, Position: m.Position, Tier: m.Tier, DistanceKm: -1, Excluded: m.Excluded}
		if m.DistanceKm != nil {
			r.DistanceKm = *m.DistanceKm
		}
		if r.Position == 0 && !usable[m.Name] {
			r.Excluded = "set aside now"
		}
		v.Ranks = append(v.Ranks, r)
	}
	return v
}

// reasonWords says an X-Mirror-Reason to a visitor.
func reasonWords(reason, unlocated string) string {
	switch reason {
	case mirrors.ReasonNetwork:
		return "your address is in a network or cloud region this mirror is configured for"
	case mirrors.ReasonCountry:
		return "the mirror is in your country"
	case mirrors.ReasonContinent:
		return "the mirror is on your continent"
	case mirrors.ReasonDistance:
		return "the mirror is the nearest to you"
	case mirrors.ReasonWeight:
		return "nothing tells the nearest mirrors apart for you, so their weights share the clients, each address keeping its mirror"
	case mirrors.ReasonNoGeo:
		if unlocated == mirrors.UnlocatedUpstream.String() {
			return "your address could not be located, and such clients are sent to the upstream registry"
		}
		return "your address could not be located, so a mirror is chosen by weight alone"
	case mirrors.ReasonNoMirror:
		return "no mirror may serve your location, so layers come from the upstream registry"
	case mirrors.ReasonUnhealthy:
		return "every mirror that may serve you is set aside now, so layers come from the upstream registry"
	}
	return ""
}
