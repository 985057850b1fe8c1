package config

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// acme converts [acme], filling in the defaults; without the table (or
// without a usable mcpgate.toml) the defaults alone. It never contacts the
// CA: `mcpgate check` must work offline.
func (l *loader) acme(g *loadedGlobal) *ACME {
	a := &ACME{
		DirectoryURL: DefaultACMEDirectory,
		Challenges:   slices.Clone(DefaultACMEChallenges),
	}
	f, t := g.file, g.schema.ACME
	if f == nil || t == nil {
		return a
	}
	p := keyPath{}.key("acme")
	if t.Email != nil {
		if err := checkEmail(*t.Email); err != nil {
			f.errorf(p.key("email"), "%q: %v", *t.Email, err)
		} else {
			a.Email = *t.Email
		}
	}
	if t.DirectoryURL != nil {
		if err := checkDirectoryURL(*t.DirectoryURL); err != nil {
			f.errorf(p.key("directory_url"), "%v", err)
		} else {
			a.DirectoryURL = *t.DirectoryURL
		}
	}
	if t.CARootFile != nil {
		if *t.CARootFile == "" {
			f.errorf(p.key("ca_root_file"), "must not be empty (omit it to trust the system roots only)")
		} else {
			a.CARootFile = l.path(*t.CARootFile)
			if err := checkRootFile(a.CARootFile); err != nil {
				f.errorf(p.key("ca_root_file"), "%v", err)
			}
		}
	}
	if t.Challenges != nil {
		a.Challenges = f.challenges(p.key("challenges"), *t.Challenges)
	}
	l.eab(f, p, t, a)
	return a
}

// checkEmail accepts what an ACME account contact needs: one "@" between a
// local part and a domain with a dot. The CA checks the rest.
func checkEmail(s string) error {
	if strings.HasPrefix(strings.ToLower(s), "mailto:") {
		return errors.New(`write the address without "mailto:"`)
	}
	local, domain, ok := strings.Cut(s, "@")
	switch {
	case !ok || local == "" || domain == "" || strings.Contains(domain, "@"):
		return errors.New("not an email address (name@example.com)")
	case strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(`,;<>()[]"\`, r) }):
		return errors.New("must not contain spaces, control characters or ,;<>()[]\"\\")
	case !strings.Contains(strings.Trim(domain, "."), "."):
		return fmt.Errorf("domain %q has no dot", domain)
	}
	return nil
}

// checkDirectoryURL: ACME runs over https only (RFC 8555 section 6.1).
func checkDirectoryURL(raw string) error {
	u, err := checkWebURL(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "https" {
		return errors.New("an ACME directory is reached over https only")
	}
	return nil
}

// checkRootFile checks that path holds at least one PEM certificate and
// nothing that fails to parse.
func checkRootFile(path string) error {
	fh, err := os.Open(path)
	if err != nil {
		return pathError(err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, 1<<20))
	if err != nil {
		return pathError(err)
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return fmt.Errorf("%s: certificate %d: %v", path, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate", path)
	}
	return nil
}

// challenges checks the list of challenge types: known, each once, at
// least one.
func (f *file) challenges(p keyPath, in []string) []string {
	out := []string{}
	for i, c := range in {
		ep := p.at(i)
		switch {
		case f.isBad(ep):
		case !slices.Contains(DefaultACMEChallenges, c):
			f.errorf(ep, "%q is not a challenge mcpgate answers (%s; dns-01 is not supported)", c, strings.Join(DefaultACMEChallenges, ", "))
		case slices.Contains(out, c):
			f.errorf(ep, "%q is listed more than once", c)
		default:
			out = append(out, c)
		}
	}
	if len(in) == 0 {
		f.errorf(p, "name at least one of %s (omit the key for both)", strings.Join(DefaultACMEChallenges, ", "))
	}
	return out
}

const inlineEAB = "secrets are never written inline: put the HMAC key in a file and set eab_hmac_file, or name a systemd credential with eab_hmac_credential"

// eab checks the external account binding: a key id and the base64url
// HMAC key (a file, or a systemd credential), both or neither. The key is
// read only to check it; its value is never part of an error.
func (l *loader) eab(f *file, p keyPath, t *acmeTable, a *ACME) {
	if t.EABHMAC != nil {
		f.errorf(p.key("eab_hmac"), inlineEAB)
	}
	kp, hp, cp := p.key("eab_kid"), p.key("eab_hmac_file"), p.key("eab_hmac_credential")
	hasKey := t.EABHMACFile != nil || t.EABHMACCredential != nil
	switch {
	case t.EABKeyID == nil && !hasKey:
		return
	case t.EABHMACFile != nil && t.EABHMACCredential != nil:
		f.errorf(cp, "cannot be combined with eab_hmac_file")
		return
	case !hasKey:
		f.errorf(kp, "set eab_hmac_file or eab_hmac_credential too")
		return
	case t.EABKeyID == nil:
		f.errorf(p, "eab_kid is required with the HMAC key")
		return
	}
	if *t.EABKeyID == "" {
		f.errorf(kp, "must not be empty")
	} else {
		a.EABKeyID = *t.EABKeyID
	}
	var path string
	at := hp
	switch {
	case t.EABHMACCredential != nil:
		at = cp
		if path = f.credential(cp, *t.EABHMACCredential); path == "" || f.isBad(cp) {
			return
		}
	case *t.EABHMACFile == "":
		f.errorf(hp, "must not be empty")
		return
	default:
		path = l.path(*t.EABHMACFile)
	}
	a.EABHMACFile = path
	if _, err := ReadEABKey(path); err != nil {
		f.errorf(at, "%v", err)
	}
}

// ReadEABKey reads an external account binding HMAC key: base64url, with
// or without padding, surrounding whitespace ignored.
func ReadEABKey(path string) ([]byte, error) {
	if err := checkSecretFile(path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, pathError(err)
	}
	s := strings.TrimRight(strings.TrimSpace(string(b)), "=")
	key, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(key) == 0 {
		// Never the content: it is a secret.
		return nil, fmt.Errorf("%s does not hold a base64url HMAC key", path)
	}
	return key, nil
}
