package proxy

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
)

func tlsDial(srv *httptest.Server, tr *http.Transport) (net.Conn, error) {
	cfg := tr.TLSClientConfig.Clone()
	cfg.NextProtos = []string{"http/1.1"}
	return tls.Dial("tcp", srv.Listener.Addr().String(), cfg)
}
