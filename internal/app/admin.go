package app

import (
	"log/slog"
	"net/http"
	"net/netip"

	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// resolveHandler explains, for ?ip=ADDR (default: the caller's own address as the proxy sees it)
// and an optional ?digest= and ?name=, which route a name takes and which mirror a blob request would get and why: Parts.Explain, as
// `oci-proxy resolve` prints it. JSON by default, ?format=text for people.
func resolveHandler(p *Parts, ups *upstream.Table, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		q := r.URL.Query()
		addr := p.ClientIP.FromRequest(r)
		if s := q.Get("ip"); s != "" {
			a, err := netip.ParseAddr(s)
			if err != nil {
				http.Error(w, "ip: not an IP address", http.StatusBadRequest)
				return
			}
			addr = a
		}
		var d oci.Digest
		if s := q.Get("digest"); s != "" {
			var err error
			if d, err = oci.ParseDigest(s); err != nil {
				http.Error(w, "digest: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		var route *RouteExplanation
		if s := q.Get("name"); s != "" {
			var err error
			if route, err = explainRoute(ups, s); err != nil {
				http.Error(w, "name: "+err.Error(), http.StatusBadRequest)
				return
			}
		}
		method := http.MethodGet
		if q.Get("method") == http.MethodHead {
			method = http.MethodHead
		}
		e := p.Explain(r.Context(), addr, d, method)
		w.Header().Set("Cache-Control", "no-store")
		text := q.Get("format") == "text"
		if text {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		} else {
			w.Header().Set("Content-Type", "application/json")
		}
		if err := writeResolve(w, route, e, !text); err != nil {
			log.Warn("write resolve answer", slog.String("err", err.Error()))
		}
	})
}
