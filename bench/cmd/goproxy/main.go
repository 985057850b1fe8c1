// Command goproxy is the baseline of `make bench` for the supervisor
// hand-off: a plain Go TLS reverse proxy in one process, listening itself.
// It does what an mcpgate worker does for a request without the supervisor
// in front (TLS with the same certificate, HTTP/2 and HTTP/1.1, a JSON
// access-log line per request, httputil.ReverseProxy to the same backend)
// but no bearer check, so comparing new TLS connections per second through
// it and through mcpgate isolates the cost of accepting in the supervisor,
// peeking the ClientHello and passing the descriptor to the worker.
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TLS address")
	certFile := flag.String("cert", "", "certificate")
	keyFile := flag.String("key", "", "key")
	target := flag.String("target", "", "backend URL, http://host:port")
	logFile := flag.String("log", "", "access log file (JSON lines); empty: stderr")
	flag.Parse()

	u, err := url.Parse(*target)
	if err != nil || u.Host == "" {
		log.Fatalf("bad -target %q", *target)
	}
	out := os.Stderr
	if *logFile != "" {
		if out, err = os.OpenFile(*logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			log.Fatal(err)
		}
	}
	logger := slog.New(slog.NewJSONHandler(out, nil))
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        512,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
		},
		Transport: tr,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		rp.ServeHTTP(rec, r)
		logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("client", r.RemoteAddr), slog.String("method", r.Method),
			slog.String("host", r.Host), slog.String("path", r.URL.Path),
			slog.String("proto", r.Proto), slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)))
	})
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2", "http/1.1"},
		},
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(srv.ServeTLS(l, "", "")) }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach Flush on the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
