package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// loadedGlobal is mcpgate.toml as decoded, for the conversions that need
// the proxies first ([oauth]).
type loadedGlobal struct {
	server *Server
	file   *file // nil when mcpgate.toml is absent or unusable
	schema globalFile
}

// global loads mcpgate.toml and converts [server]. It always returns the
// settings (defaults where the file is absent or wrong) so that proxy files
// are still checked. It also decides l.noOAuth, which proxy files need.
func (l *loader) global() *loadedGlobal {
	name := filepath.Join(l.dir, GlobalFile)
	g := &loadedGlobal{}
	present, err := exists(name)
	if err != nil {
		l.errs = append(l.errs, ioError(name, err))
	}
	if present {
		var doc map[string]any
		g.file, doc = readFile(name, &l.errs)
		if g.file != nil {
			g.file.bind(nil, doc, reflect.ValueOf(&g.schema).Elem())
		}
	}
	// Only when it is certain that there is no [oauth]: a proxy must not
	// be blamed for a broken mcpgate.toml.
	oauthKey := keyPath{}.key("oauth")
	l.noOAuth = err == nil && (!present || g.file != nil && g.schema.OAuth == nil && !g.file.isBad(oauthKey))
	g.server = l.server(g.file, g.schema.Server)
	if present {
		g.server.File = filepath.Join(l.abs, GlobalFile)
	}
	return g
}

// server converts [server], applying the documented defaults. f is nil when
// there is no usable mcpgate.toml; then s is nil too.
func (l *loader) server(f *file, s *serverTable) *Server {
	srv := &Server{
		HTTPS:         slices.Clone(DefaultHTTPS),
		HTTP:          slices.Clone(DefaultHTTP),
		StateDir:      DefaultStateDir,
		DrainTimeout:  DefaultDrainTimeout,
		AccessLog:     true,
		LogLevel:      DefaultLogLevel,
		HealthDetails: DefaultHealthDetails,
	}
	// systemd's StateDirectory= sets this; it may list several, colon-separated.
	if env, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); env != "" {
		srv.StateDir = l.path(env)
	}
	if s == nil {
		return srv
	}
	p := keyPath{}.key("server")
	if s.HTTPS != nil {
		srv.HTTPS = f.listenAddrs(p.key("https"), *s.HTTPS)
	}
	if s.HTTP != nil {
		srv.HTTP = f.listenAddrs(p.key("http"), *s.HTTP)
	}
	if s.QUIC != nil {
		srv.QUIC = f.listenAddrs(p.key("quic"), *s.QUIC)
	}
	f.checkDuplicateAddrs(p, s)
	if s.StateDir != nil {
		if *s.StateDir == "" {
			f.errorf(p.key("state_dir"), "must not be empty")
		} else {
			srv.StateDir = l.path(*s.StateDir)
		}
	}
	if s.DrainTimeout != nil {
		srv.DrainTimeout = f.positive(p.key("drain_timeout"), *s.DrainTimeout, DefaultDrainTimeout)
	}
	if s.PprofDir != nil {
		if *s.PprofDir == "" {
			f.errorf(p.key("pprof_dir"), "must not be empty (omit it to turn profiling off)")
		} else {
			srv.PprofDir = l.path(*s.PprofDir)
		}
	}
	if s.AccessLog != nil {
		srv.AccessLog = *s.AccessLog
	}
	if s.LogLevel != nil {
		if slices.Contains(LogLevels, *s.LogLevel) {
			srv.LogLevel = *s.LogLevel
		} else {
			f.errorf(p.key("log_level"), `%q: must be "debug", "info", "warn" or "error"`, *s.LogLevel)
		}
	}
	if s.HealthDetails != nil {
		switch v := *s.HealthDetails; v {
		case HealthDetailsLoopback, HealthDetailsAll:
			srv.HealthDetails = v
		default:
			f.errorf(p.key("health_details"), `%q: must be "loopback" (version and build only for clients on this machine) or "all"`, v)
		}
	}
	if s.Metrics != nil {
		if err := checkMetricsAddr(*s.Metrics); err != nil {
			f.errorf(p.key("metrics"), "%q: %v", *s.Metrics, err)
		} else {
			srv.Metrics = *s.Metrics
		}
	}
	for i, raw := range s.ProxyProtocolFrom {
		pfx, err := parsePrefix(raw)
		if err != nil {
			f.errorf(p.key("proxy_protocol_from").at(i), "%q: %v", raw, err)
			continue
		}
		if slices.Contains(srv.ProxyProtocolFrom, pfx) {
			f.errorf(p.key("proxy_protocol_from").at(i), "%q is listed more than once", raw)
			continue
		}
		srv.ProxyProtocolFrom = append(srv.ProxyProtocolFrom, pfx)
	}
	return srv
}

// listenAddrs checks host:port listen addresses. It returns a non-nil slice
// so that an explicit [] stays "none" rather than "default".
func (f *file) listenAddrs(p keyPath, addrs []string) []string {
	out := make([]string, 0, len(addrs))
	for i, a := range addrs {
		if f.isBad(p.at(i)) {
			continue
		}
		if err := checkListenAddr(a); err != nil {
			f.errorf(p.at(i), "%q: %v", a, err)
			continue
		}
		out = append(out, a)
	}
	return out
}

func checkListenAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		msg := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			msg = ae.Err
		}
		return fmt.Errorf("not host:port (%s)", msg)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("invalid port %q (use a number from 0 to 65535)", port)
	}
	if _, err := netip.ParseAddr(host); host == "" || err == nil {
		return nil
	}
	if _, err := normalizeHostname(host); err != nil {
		return fmt.Errorf("invalid host: %v", err)
	}
	return nil
}

// checkMetricsAddr checks [server] metrics: host:port with a fixed port
// (a scraper has to know it), or unix: and an absolute path.
func checkMetricsAddr(a string) error {
	if a == "" {
		return errors.New("must not be empty (omit it to turn metrics off)")
	}
	if path, ok := strings.CutPrefix(a, MetricsUnixPrefix); ok {
		if !filepath.IsAbs(path) || filepath.Clean(path) != path {
			return errors.New("the socket path must be absolute and clean, such as unix:/run/mcpgate/metrics.sock")
		}
		return nil
	}
	if err := checkListenAddr(a); err != nil {
		return fmt.Errorf("%v; use host:port or unix:/absolute/path", err)
	}
	if _, port, _ := net.SplitHostPort(a); port == "0" {
		return errors.New("port 0 picks a random port, which no scraper can find: give a fixed one")
	}
	return nil
}

// checkDuplicateAddrs rejects an address listed twice in https and http
// together; the second listener could never bind. A clash with a default is
// reported at the explicit entry, since the default is written nowhere.
func (f *file) checkDuplicateAddrs(p keyPath, s *serverTable) {
	type list struct {
		key   string
		addrs *[]string
		dflt  []string
	}
	lists := []list{{"https", s.HTTPS, DefaultHTTPS}, {"http", s.HTTP, DefaultHTTP}}
	seen := map[string]keyPath{} // canonical address -> where it was listed
	for _, l := range lists {
		if l.addrs == nil {
			continue
		}
		for i, a := range *l.addrs {
			ep := p.key(l.key).at(i)
			canon, ok := canonicalAddr(a)
			if !ok {
				continue
			}
			if first, dup := seen[canon]; dup {
				f.errorf(ep, "%q is also listed in %s", a, first)
				continue
			}
			seen[canon] = ep
		}
	}
	for _, l := range lists {
		if l.addrs != nil {
			continue
		}
		for _, a := range l.dflt {
			canon, _ := canonicalAddr(a)
			if first, dup := seen[canon]; dup {
				f.errorf(first, "%q is also the default for %s (set %s explicitly)", a, p.key(l.key), l.key)
			}
		}
	}
}

// canonicalAddr spells an address one way, so "[::1]:08443" and
// "[::1]:8443" are recognised as the same.
func canonicalAddr(a string) (string, bool) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", false
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(strings.ToLower(host), strconv.FormatUint(n, 10)), true
}

// exists reports whether name is present in the directory at all; a
// dangling symlink counts, so that it is reported rather than ignored.
func exists(name string) (bool, error) {
	_, err := os.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// parsePrefix accepts a CIDR prefix or a single address (IPv4 or IPv6).
func parsePrefix(raw string) (netip.Prefix, error) {
	if strings.Contains(raw, "/") {
		pfx, err := netip.ParsePrefix(raw)
		if err != nil {
			return netip.Prefix{}, errors.New("not a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32")
		}
		if pfx != pfx.Masked() {
			return netip.Prefix{}, fmt.Errorf("has host bits set; did you mean %s?", pfx.Masked())
		}
		return pfx, nil
	}
	a, err := netip.ParseAddr(raw)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, errors.New("not an IP address or CIDR prefix")
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
