// Command backend is the MCP-shaped origin server every contender of
// `make bench` proxies to, so that they all do the same work:
//
//	GET  /small  a small JSON body (about 100 bytes)
//	POST /mcp    a Streamable-HTTP-style JSON-RPC call answered with JSON,
//	             with an Mcp-Session-Id header
//	GET  /sse    an SSE stream: one event at once, then a comment every
//	             15 s until the client goes away
//
// It serves plain HTTP/1.1 and HTTP/2 prior knowledge (h2c) on -listen, the
// "direct" contender, and the same handlers over TLS on -tls-listen, the
// limit for new TLS connections per second.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const small = `{"jsonrpc":"2.0","id":1,"result":{"ok":true,"server":"mcpgate-bench","items":[1,2,3]}}` + "\n"

const mcpReply = `{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"pong"}],"isError":false}}` + "\n"

const firstEvent = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"hello\"}}\n\n"

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", fmt.Sprint(len(small)))
		io.WriteString(w, small)
	})
	mux.HandleFunc("POST /mcp", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Mcp-Session-Id", "bench-session")
		h.Set("Content-Length", fmt.Sprint(len(mcpReply)))
		io.WriteString(w, mcpReply)
	})
	mux.HandleFunc("GET /sse", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Accel-Buffering", "no") // nginx: do not buffer
		rc := http.NewResponseController(w)
		io.WriteString(w, firstEvent)
		if err := rc.Flush(); err != nil {
			return
		}
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
				if _, err := io.WriteString(w, ": ping\n\n"); err != nil {
					return
				}
				if err := rc.Flush(); err != nil {
					return
				}
			}
		}
	})
	return mux
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "plain HTTP/1.1 + h2c address")
	tlsListen := flag.String("tls-listen", "", "TLS (h2, http/1.1) address; empty: none")
	certFile := flag.String("cert", "", "certificate for -tls-listen")
	keyFile := flag.String("key", "", "key for -tls-listen")
	flag.Parse()

	h := handler()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	plain := &http.Server{Handler: h, Protocols: &protos, IdleTimeout: 5 * time.Minute,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000}}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() { log.Fatal(plain.Serve(l)) }()

	if *tlsListen != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		srv := &http.Server{Handler: h, IdleTimeout: 5 * time.Minute,
			TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}},
			HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: 1000}}
		tl, err := net.Listen("tcp", *tlsListen)
		if err != nil {
			log.Fatal(err)
		}
		go func() { log.Fatal(srv.ServeTLS(tl, "", "")) }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
