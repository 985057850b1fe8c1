package worker

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/mcpgate/mcpgate/internal/handoff"
	"github.com/mcpgate/mcpgate/internal/metrics"
	"github.com/mcpgate/mcpgate/internal/quicroute"
	"github.com/mcpgate/mcpgate/internal/wire"
)

// h3 is a worker's HTTP/3 server: QUIC datagrams arrive from the supervisor
// over a unix socket and replies leave through the shared UDP socket.
type h3 struct {
	tr     *quic.Transport
	ln     *quic.EarlyListener
	srv    *http3.Server
	altSvc string
}

// startHTTP3 serves handler over HTTP/3 when the spec says so.
func (w *Worker) startHTTP3(tlsConf *tls.Config, handler http.Handler) (*h3, error) {
	q := w.spec.QUIC
	if q == nil {
		return nil, nil
	}
	inF := os.NewFile(FdQUICIn, "quic-in")
	if inF == nil {
		return nil, errors.New("http3: missing QUIC descriptors")
	}
	in, err := net.FileConn(inF)
	inF.Close()
	if err != nil {
		return nil, fmt.Errorf("http3: %w", err)
	}
	// The shared UDP socket by its number, never as an *os.File: that
	// would put it in this worker's epoll set (handoff.UDPSender).
	out, err := handoff.NewUDPSender(FdQUICConn)
	if err != nil {
		in.Close()
		return nil, fmt.Errorf("http3: %w", err)
	}
	resetKey, tokenKey, err := quicKeys(w.spec.StateDir)
	if err != nil {
		in.Close()
		out.Close()
		return nil, err
	}
	gen, err := cidGenerator(q)
	if err != nil {
		in.Close()
		out.Close()
		return nil, err
	}
	tr := &quic.Transport{
		Conn:                  handoff.NewDatagramConn(in.(*net.UnixConn), out),
		ConnectionIDGenerator: gen,
		StatelessResetKey:     &resetKey,
		TokenGeneratorKey:     &tokenKey,
	}
	tc := http3.ConfigureTLSConfig(tlsConf.Clone())
	ln, err := tr.ListenEarly(tc, &quic.Config{Allow0RTT: false, EnableDatagrams: false})
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("http3: %w", err)
	}
	s := &h3{
		tr:     tr,
		ln:     ln,
		srv:    &http3.Server{Handler: handler, Port: q.Port, TLSConfig: tc, ConnContext: countH3Conn},
		altSvc: `h3=":` + strconv.Itoa(q.Port) + `"; ma=86400`,
	}
	go s.srv.ServeListener(ln)
	return s, nil
}

// countH3Conn counts an HTTP/3 connection in mcpgate_connections until it
// ends.
func countH3Conn(ctx context.Context, c *quic.Conn) context.Context {
	metrics.Default.ConnOpened(metrics.H3)
	context.AfterFunc(c.Context(), func() { metrics.Default.ConnClosed(metrics.H3) })
	return ctx
}

// advertise adds Alt-Svc for HTTP/3 to HTTP/1.1 and HTTP/2 responses.
func (s *h3) advertise(next http.Handler) http.Handler {
	if s == nil {
		return next
	}
	// One value slice for every response instead of one per response:
	// its length is its capacity, so a later Add copies it, never writes
	// into it.
	v := []string{s.altSvc}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor < 3 {
			w.Header()["Alt-Svc"] = v[:1:1]
		}
		next.ServeHTTP(w, r)
	})
}

func (s *h3) shutdown(ctx context.Context) {
	if s == nil {
		return
	}
	// GOAWAY, then wait for requests in flight until ctx ends.
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	s.ln.Close()
	s.tr.Close()
}

// quicKeys are the stateless reset and token keys, kept in state_dir so a
// restarted worker can still reset its predecessor's connections (clients
// are reset, not left hanging) and honour its address validation tokens.
func quicKeys(stateDir string) (quic.StatelessResetKey, quic.TokenGeneratorKey, error) {
	var reset quic.StatelessResetKey
	var token quic.TokenGeneratorKey
	path := filepath.Join(stateDir, "quic.keys")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err = createOnce(path, 64); err == nil {
			b, err = os.ReadFile(path)
		}
	}
	if err != nil {
		return reset, token, fmt.Errorf("http3: %w", err)
	}
	if len(b) != 64 {
		return reset, token, fmt.Errorf("http3: %s: want 64 bytes, have %d", path, len(b))
	}
	copy(reset[:], b[:32])
	copy(token[:], b[32:])
	return reset, token, nil
}

// createOnce writes n random bytes to path unless it exists. The file is
// complete before it appears (written aside, then hard-linked into place,
// which fails if another worker was first), so readers never see a part.
func createOnce(path string, n int) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".quic-keys-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	buf := make([]byte, n)
	rand.Read(buf)
	_, werr := tmp.Write(buf)
	serr := tmp.Sync()
	if err := tmp.Close(); err != nil || werr != nil || serr != nil {
		return errors.Join(err, werr, serr)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return nil
}

// cidGenerator makes the connection ids the supervisor decodes: wide ones
// when it says it can, else the previous build's 8-bit layout.
func cidGenerator(q *wire.QUICSpec) (quic.ConnectionIDGenerator, error) {
	if q.WideCIDs {
		return quicroute.NewGenerator(q.WorkerID, q.CIDKey, quic.ConnectionIDFromBytes), nil
	}
	if q.WorkerID > 255 {
		return nil, fmt.Errorf("http3: worker id %d does not fit the supervisor's 8-bit connection ids", q.WorkerID)
	}
	return quicroute.NewNarrowGenerator(uint8(q.WorkerID), q.CIDKey, quic.ConnectionIDFromBytes), nil
}
