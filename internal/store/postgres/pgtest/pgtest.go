// Package pgtest runs a real PostgreSQL for tests: Debian's postgresql
// package, initdb into a temporary directory, one server per test binary
// (started on first use) and a fresh database per test. There are no mocks
// of the store: the PostgreSQL backend is tested against the real thing.
//
// When the server binaries are missing, tests skip with a message saying
// how to install them, except under CI=true, where they fail: CI must never
// pass by skipping the only tests of a backend.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Password is the superuser's password: host connections need it
// (scram-sha-256), like a real installation's.
const Password = "pgtest-password"

// User is the superuser name.
const User = "postgres"

// Server is one running PostgreSQL.
type Server struct {
	dir  string // data directory
	sock string // unix socket directory
	port int
	cred *syscall.Credential // nil: run as ourselves
	bin  string              // server binaries

	mu  sync.Mutex // guards cmd
	cmd *exec.Cmd
	n   atomic.Int64 // databases created
}

var (
	once    sync.Once
	shared  *Server
	initErr error
)

// binDir finds the server binaries of the newest installed major version.
func binDir() (string, error) {
	if d := os.Getenv("MCPGATE_PG_BIN"); d != "" {
		return d, nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		return "", errors.New("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install Debian's postgresql package (sudo apt-get install postgresql), or run make test as root, which installs it")
	}
	best, bestV := "", -1
	for _, m := range matches {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m))))
		if v > bestV {
			best, bestV = filepath.Dir(m), v
		}
	}
	return best, nil
}

// Get returns the shared server, starting it on first use; it skips t (or
// fails it under CI=true) when PostgreSQL is not available.
func Get(t testing.TB) *Server {
	t.Helper()
	once.Do(func() { shared, initErr = start() })
	if initErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("pgtest: %v", initErr)
		}
		t.Skipf("pgtest: %v", initErr)
	}
	return shared
}

// Main runs the tests and stops the shared server afterwards; call it from
// TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	Shutdown()
	return code
}

// Shutdown stops the shared server, if it was started, and removes its
// files; for a TestMain that cannot use Main.
func Shutdown() {
	if shared != nil {
		shared.Stop()
		os.RemoveAll(filepath.Dir(shared.dir))
	}
}

func start() (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("", "mcpgate-pgtest-")
	if err != nil {
		return nil, err
	}
	s := &Server{dir: filepath.Join(root, "data"), sock: root}
	// PostgreSQL refuses to run as root; CI runs as root, so the server
	// runs as nobody and owns its directory.
	if os.Geteuid() == 0 {
		u, err := user.Lookup("nobody")
		if err != nil {
			return nil, fmt.Errorf("running as root and no user nobody to run PostgreSQL as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(root, uid, gid); err != nil {
			return nil, err
		}
		if err := os.Chmod(root, 0o755); err != nil {
			return nil, err
		}
	}
	pwfile := filepath.Join(root, "pw")
	if err := os.WriteFile(pwfile, []byte(Password+"\n"), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(filepath.Join(bin, "initdb"), "-D", s.dir, "-U", User, "--pwfile", pwfile,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C")
	s.as(cmd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	os.Remove(pwfile)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	// Speed over durability: the data lives for one test run.
	conf := fmt.Sprintf(`listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%s'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
shared_buffers = 32MB
log_min_messages = warning
`, s.port, s.sock)
	f, err := os.OpenFile(filepath.Join(s.dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, err
	}
	f.WriteString(conf)
	f.Close()
	s.bin = bin
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) as(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGQUIT}
}

// Start starts the server (again, after Stop) and waits until it accepts
// connections.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("pgtest: already running")
	}
	cmd := exec.Command(filepath.Join(s.bin, "postgres"), "-D", s.dir)
	s.as(cmd)
	log := &logWriter{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("pgtest: postgres: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := pgx.Connect(ctx, s.adminURL("postgres"))
		cancel()
		if err == nil {
			c.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			s.cmd = nil
			return fmt.Errorf("pgtest: postgres did not start: %v\n%s", err, log.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server (fast shutdown: clients are disconnected).
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGINT)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
}

// Port is the TCP port on 127.0.0.1.
func (s *Server) Port() int { return s.port }

func (s *Server) adminURL(db string) string {
	q := url.Values{"host": {s.sock}, "port": {strconv.Itoa(s.port)}, "sslmode": {"disable"}}
	return (&url.URL{Scheme: "postgres", User: url.User(User), Path: "/" + db, RawQuery: q.Encode()}).String()
}

// URL is a TCP URL of database db without the password (configurations
// name a password file); sslmode=disable, the test server has no TLS.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", User, s.port, db)
}

// URLWithPassword is URL with the password in it.
func (s *Server) URLWithPassword(db string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", User, Password, s.port, db)
}

// NewDatabase creates an empty database for t and returns its name; it is
// dropped when t ends.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, s.adminURL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 STRATEGY FILE_COPY"); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, s.adminURL("postgres"))
		if err != nil {
			return // stopped by the test; Main removes everything
		}
		defer c.Close(context.Background())
		c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	})
	return name
}

// URL starts the shared server if needed, creates a fresh database for t
// and returns a URL with the password.
func URL(t testing.TB) string {
	t.Helper()
	s := Get(t)
	return s.URLWithPassword(s.NewDatabase(t))
}

// logWriter collects the server's log in memory (for the start error),
// bounded.
type logWriter struct {
	mu sync.Mutex
	b  strings.Builder // guarded by mu
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 64<<10 {
		w.b.Write(p)
	}
	return len(p), nil
}
