package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/mcpgate/mcpgate/internal/config"
)

// serviceUser is User= in mcpgate.service (a variable for tests).
var serviceUser = "mcpgate"

// credstores are where systemd looks for a credential loaded by name
// (LoadCredential=NAME without a path, ImportCredential=), in its order;
// encryptedCredstores for LoadCredentialEncrypted=. Variables so tests can
// point them elsewhere.
var (
	credstores          = []string{"/etc/credstore", "/run/credstore", "/usr/lib/credstore"}
	encryptedCredstores = []string{"/etc/credstore.encrypted", "/run/credstore.encrypted", "/usr/lib/credstore.encrypted"}
)

// unitPrefix is the prefix the shipped unit gives every file of
// <config-dir>/credentials (LoadCredential=mcpgate:/etc/mcpgate/credentials).
const unitPrefix = "mcpgate_"

// shellCredentials resolves a credential name as the service would see
// it, for a shell without $CREDENTIALS_DIRECTORY: the shipped unit's
// directory first, then systemd's credential stores. What exists but
// cannot be read here (encrypted, or not permitted) is a note, not an
// error: the service may well read it.
func shellCredentials(configDir string, notes *[]string) func(name string) (string, error) {
	return func(name string) (string, error) {
		var looked []string
		if rest, ok := strings.CutPrefix(name, unitPrefix); ok && rest != "" {
			path := filepath.Join(configDir, "credentials", rest)
			if found, err := credentialFile(name, path, notes); found || err != nil {
				return path, err
			}
			looked = append(looked, path)
		}
		for _, d := range credstores {
			path := filepath.Join(d, name)
			found, err := credentialFile(name, path, notes)
			if err != nil {
				return "", err
			}
			if found {
				*notes = append(*notes, fmt.Sprintf("credential %q: found %s; the service gets it only if its unit loads it: a drop-in (systemctl edit mcpgate) with LoadCredential=%s (or ImportCredential=%s, systemd 254 and later)", name, path, name, name))
				return path, nil
			}
			looked = append(looked, path)
		}
		for _, d := range encryptedCredstores {
			path := filepath.Join(d, name)
			if _, err := os.Lstat(path); err == nil || errors.Is(err, fs.ErrPermission) {
				*notes = append(*notes, fmt.Sprintf("credential %q: %s is encrypted: cannot verify here (systemd decrypts it for the service, with LoadCredentialEncrypted=%s in a drop-in)", name, path, name))
				return "", nil
			}
			looked = append(looked, path)
		}
		hint := ""
		if !strings.HasPrefix(name, unitPrefix) {
			hint = fmt.Sprintf("; the shipped unit passes %s/credentials/FILE as %sFILE", filepath.Join(configDir), unitPrefix)
		}
		return "", fmt.Errorf("not found: looked for %s%s", strings.Join(looked, ", "), hint)
	}
}

// credentialFile checks one candidate file: found and good, missing
// (false, nil), not readable here (a note; true, nil) or bad (an error).
func credentialFile(name, path string, notes *[]string) (found bool, err error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			*notes = append(*notes, fmt.Sprintf("credential %q: %s: permission denied: cannot verify here (run mcpgate check as root)", name, path))
			return true, nil
		}
		return false, nil
	}
	if err := config.CheckSecretFile(path); err != nil {
		if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
			*notes = append(*notes, fmt.Sprintf("credential %q: %s: permission denied: cannot verify here (run mcpgate check as root)", name, path))
			return true, nil
		}
		return true, err
	}
	return true, nil
}

// loadConfig loads the configuration as check does (credentials resolved
// from a shell as the service would see them), dropping the notes.
func loadConfig(dir string) (*config.Config, error) {
	var notes []string
	return config.LoadWith(dir, config.Options{Credential: shellCredentials(dir, &notes)})
}

// check is `mcpgate check`: the summary of every proxy on stdout, every
// error (exit 1) or warning (exit 0) on stderr.
func check(dir string) int {
	var notes []string
	cfg, err := config.LoadWith(dir, config.Options{Credential: shellCredentials(dir, &notes)})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if len(cfg.Proxies) == 0 {
		fmt.Fprintf(stdout, "%s: configuration is valid; no proxies configured\n", dir)
	}
	for _, p := range cfg.Proxies {
		fmt.Fprintln(stdout, p.Summary())
	}
	if line := acmeSummary(cfg); line != "" {
		fmt.Fprintln(stdout, line)
	}
	notes = append(notes, tlsWarnings(cfg)...)
	for _, n := range notes {
		fmt.Fprintln(stderr, "warning:", n)
	}
	return 0
}

// unitConfigDir is the configuration directory of the shipped unit: only
// there does its sandbox apply (a variable for tests).
var unitConfigDir = defaultConfigDir

// tlsWarnings: certificates that do not cover a hostname of their proxy
// (clients would refuse the connection), key or certificate files the
// service user cannot read and, for the unit's configuration directory,
// files its sandbox hides (the worker would fail to start).
func tlsWarnings(cfg *config.Config) []string {
	var out []string
	unit := filepath.Clean(cfg.Dir) == filepath.Clean(unitConfigDir)
	svc, note := lookupServiceUser()
	if note != "" && hasTLSFiles(cfg) {
		out = append(out, note)
	}
	for _, p := range cfg.Proxies {
		if !p.Enabled || p.TLS.CertFile == "" {
			continue
		}
		if cert, err := leafCert(p.TLS.CertFile); err == nil {
			for _, h := range uncovered(cert, p.Hostnames) {
				out = append(out, fmt.Sprintf("%s: tls.cert_file: %s does not cover hostname %q: clients will refuse it", p.File, p.TLS.CertFile, h))
			}
		}
		for _, f := range []struct{ key, path string }{{"tls.key_file", p.TLS.KeyFile}, {"tls.cert_file", p.TLS.CertFile}} {
			if why := hiddenBySandbox(f.path); unit && why != "" {
				out = append(out, fmt.Sprintf("%s: %s: %s is hidden from the service by %s", p.File, f.key, f.path, why))
				continue
			}
			if svc != nil {
				if err := svc.canRead(f.path); err != nil {
					out = append(out, fmt.Sprintf("%s: %s: user %s cannot read %s: %v", p.File, f.key, serviceUser, f.path, err))
				}
			}
		}
	}
	return out
}

func hasTLSFiles(cfg *config.Config) bool {
	for _, p := range cfg.Proxies {
		if p.Enabled && p.TLS.CertFile != "" {
			return true
		}
	}
	return false
}

// leafCert is the first certificate of a PEM file.
func leafCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no certificate")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// uncovered lists the hostnames cert is not valid for. A wildcard
// hostname "*.example.com" needs a certificate for any one label below
// example.com, so a sample name stands for it.
func uncovered(cert *x509.Certificate, hostnames []string) []string {
	var out []string
	for _, h := range hostnames {
		name := h
		if rest, ok := strings.CutPrefix(h, "*."); ok {
			name = "mcpgate-check-label." + rest
		}
		if cert.VerifyHostname(name) != nil {
			out = append(out, h)
		}
	}
	return out
}

// hiddenBySandbox names the unit setting that hides path from the
// service (mcpgate.service has ProtectHome=yes and PrivateTmp=yes).
func hiddenBySandbox(path string) string {
	for _, d := range []string{"/home/", "/root/", "/run/user/"} {
		if strings.HasPrefix(path, d) {
			return "ProtectHome=yes"
		}
	}
	for _, d := range []string{"/tmp/", "/var/tmp/"} {
		if strings.HasPrefix(path, d) {
			return "PrivateTmp=yes"
		}
	}
	return ""
}

// account is a user with its groups, for permission checks by mode bits.
type account struct {
	uid  uint32
	gids []uint32
}

// lookupServiceUser finds the service user; without one (mcpgate is not
// installed here) the check is skipped with a note.
func lookupServiceUser() (*account, string) {
	u, err := user.Lookup(serviceUser)
	if err != nil {
		return nil, fmt.Sprintf("user %s does not exist here: not checking that it can read the TLS files", serviceUser)
	}
	a := &account{}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, ""
	}
	a.uid = uint32(uid)
	gids, _ := u.GroupIds()
	if !slices.Contains(gids, u.Gid) {
		gids = append(gids, u.Gid)
	}
	for _, g := range gids {
		if n, err := strconv.ParseUint(g, 10, 32); err == nil {
			a.gids = append(a.gids, uint32(n))
		}
	}
	return a, ""
}

// canRead checks by mode bits (not ACLs) that a may search every directory
// above path and read path.
func (a *account) canRead(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
		if !a.may(dir, 1) {
			return fmt.Errorf("no search permission on %s", dir)
		}
		if dir == "/" {
			break
		}
	}
	if !a.may(abs, 4) {
		return errors.New("no read permission (make it readable by group mcpgate: chgrp mcpgate FILE; chmod 0640 FILE)")
	}
	return nil
}

// may reports whether a has permission bit (4 read, 1 search) on path.
func (a *account) may(path string, bit uint32) bool {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return false
	}
	mode := st.Mode & 0o777
	switch {
	case a.uid == 0:
		return true
	case st.Uid == a.uid:
		return mode&(bit<<6) != 0
	case slices.Contains(a.gids, st.Gid):
		return mode&(bit<<3) != 0
	}
	return mode&bit != 0
}
