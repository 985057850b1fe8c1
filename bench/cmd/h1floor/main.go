// Command h1floor is an experiment for issue 15 (bench/README.md, "What a
// server of our own would save"), not a contender of `make bench` and not
// a product: a TLS reverse proxy for HTTP/1.1 only, written without
// net/http's server and without http.Transport, to measure how little CPU a
// Go proxy can spend per keep-alive request when it keeps Go's TLS and
// net/http's parsers (http.ReadRequest, http.ReadResponse) and drops the
// rest: no per-request context, no background read, no handler goroutines,
// one goroutine per connection and one write per response.
//
// It leaves out what mcpgate must keep (the bearer check, ≈ 0.7 µs on a
// cache hit; the access log, ≈ 0.8 µs a line; header policy; limits and
// timeouts beyond a read deadline), so its figure is a floor for an
// mcpgate worker with a server of its own, not a prediction.
package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "TLS address")
	certFile := flag.String("cert", "", "certificate")
	keyFile := flag.String("key", "", "key")
	target := flag.String("target", "", "backend host:port (plain HTTP/1.1)")
	flag.Parse()
	if *target == "" {
		log.Fatal("-target is required")
	}
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		log.Fatal(err)
	}
	ln, err := tls.Listen("tcp", *listen, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"http/1.1"},
	})
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	p := &pool{addr: *target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serve(c, p)
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
	ln.Close()
}

// upConn is a keep-alive connection to the backend.
type upConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

type pool struct {
	addr string
	mu   sync.Mutex
	idle []*upConn
}

func (p *pool) get() (*upConn, error) {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		uc := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return uc, nil
	}
	p.mu.Unlock()
	c, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return &upConn{c: c, br: bufio.NewReaderSize(c, 4<<10), bw: bufio.NewWriterSize(c, 4<<10)}, nil
}

func (p *pool) put(uc *upConn) {
	p.mu.Lock()
	p.idle = append(p.idle, uc)
	p.mu.Unlock()
}

// hopByHop are never forwarded (RFC 9110 7.6.1).
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Length": true, "Host": true,
}

const badGateway = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

func serve(c net.Conn, p *pool) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 4<<10)
	bw := bufio.NewWriterSize(c, 4<<10)
	client, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	for {
		c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		req, err := http.ReadRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			return
		}
		if !proxy(req, bw, p, client) {
			return
		}
		if err := bw.Flush(); err != nil || req.Close {
			return
		}
	}
}

// proxy sends req to the backend and its response to bw; false: the client
// connection must close.
func proxy(req *http.Request, bw *bufio.Writer, p *pool, client string) bool {
	uc, err := p.get()
	if err != nil {
		bw.WriteString(badGateway)
		bw.Flush()
		return false
	}
	w := uc.bw
	w.WriteString(req.Method)
	w.WriteByte(' ')
	w.WriteString(req.URL.RequestURI())
	w.WriteString(" HTTP/1.1\r\nHost: ")
	w.WriteString(req.Host)
	w.WriteString("\r\n")
	writeFields(w, req.Header)
	w.WriteString("X-Forwarded-For: ")
	w.WriteString(client)
	w.WriteString("\r\n")
	switch {
	case req.ContentLength > 0:
		w.WriteString("Content-Length: ")
		w.WriteString(strconv.FormatInt(req.ContentLength, 10))
		w.WriteString("\r\n\r\n")
		_, err = io.CopyN(w, req.Body, req.ContentLength)
	case req.ContentLength < 0:
		w.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(w)
		if _, err = io.Copy(cw, req.Body); err == nil {
			err = cw.Close()
		}
		w.WriteString("\r\n")
	default:
		w.WriteString("\r\n")
	}
	if err == nil {
		err = w.Flush()
	}
	var res *http.Response
	if err == nil {
		res, err = http.ReadResponse(uc.br, req)
	}
	if err != nil {
		uc.c.Close()
		bw.WriteString(badGateway)
		bw.Flush()
		return false
	}
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(res.StatusCode))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(res.StatusCode))
	bw.WriteString("\r\n")
	writeFields(bw, res.Header)
	chunked := res.ContentLength < 0 && res.Body != http.NoBody
	if chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n\r\n")
		cw := httputil.NewChunkedWriter(bw)
		_, err = io.Copy(flushWriter{cw, bw}, res.Body)
		if err == nil {
			cw.Close()
			bw.WriteString("\r\n")
		}
	} else {
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(max(res.ContentLength, 0), 10))
		bw.WriteString("\r\n\r\n")
		_, err = io.Copy(bw, res.Body)
	}
	res.Body.Close()
	if err != nil || res.Close || uc.br.Buffered() > 0 {
		uc.c.Close()
		return err == nil
	}
	p.put(uc)
	return true
}

// writeFields writes h's fields but the hop-by-hop ones.
func writeFields(w *bufio.Writer, h http.Header) {
	for k, vs := range h {
		if hopByHop[k] {
			continue
		}
		for _, v := range vs {
			w.WriteString(k)
			w.WriteString(": ")
			w.WriteString(v)
			w.WriteString("\r\n")
		}
	}
}

// flushWriter flushes each chunk of a response of unknown length (event
// streams).
type flushWriter struct {
	w  io.Writer
	bw *bufio.Writer
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.bw.Flush()
	}
	return n, err
}
