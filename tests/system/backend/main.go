// Command backend is the upstream of the system test
// (tests/system/systemtest.sh): a plain HTTP server, run inside the booted
// container as a transient unit, that names itself in every answer so the
// test can tell which proxy a request went through.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3001", "address to listen on")
	name := flag.String("name", "backend", "name in every answer")
	flag.Parse()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "backend %s: %s %s host=%s\n", *name, r.Method, r.URL.Path, r.Host)
	})
	srv := &http.Server{Addr: *listen, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("backend %s listening on %s", *name, *listen)
	log.Fatal(srv.ListenAndServe())
}
