// Command benchsrv is the reference that scripts/bench.sh measures oci-proxy against: the bare
// net/http stack answering every request with a 307 to one fixed Location and nothing else. No
// logging, no metrics, no parsing: it is the ceiling a redirector built on net/http can reach on
// a given machine, so the service's figures are reported as ratios to it. Standard library only.
//
// With --timeouts it sets the read, write and idle timeouts of internal/app's NewServer, to show
// what they cost by themselves: net/http then moves a connection's deadlines five times per
// request. oci-proxy's public listener bounds the same things with fewer moves
// (internal/app/deadline.go), so the service can come out cheaper than this reference.
//
//	benchsrv --listen 127.0.0.1:18090 --location https://registry.example/v2/app/manifests/1.0.0
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18090", "address to listen on")
	location := flag.String("location", "https://registry.example/v2/app/manifests/1.0.0", "Location of every answer")
	timeouts := flag.Bool("timeouts", false, "set oci-proxy's server timeouts")
	flag.Parse()
	loc := []string{*location}
	srv := &http.Server{
		Addr: *listen,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header()["Location"] = loc
			w.WriteHeader(http.StatusTemporaryRedirect)
		}),
	}
	if *timeouts {
		// The values of internal/app's NewServer.
		srv.ReadHeaderTimeout = 10 * time.Second
		srv.ReadTimeout = 30 * time.Second
		srv.WriteTimeout = 30 * time.Second
		srv.IdleTimeout = 120 * time.Second
	}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "benchsrv:", err)
		os.Exit(1)
	}
}
