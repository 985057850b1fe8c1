// Package certstatus is what a worker reports about each certificate it
// manages with ACME, and what `mcpgate status` and `mcpgate certs list`
// show. It is a leaf (standard library only) so the supervisor and the
// command line can carry it without linking the ACME client.
package certstatus

import "time"

// States of a managed certificate.
const (
	// Obtaining: no certificate yet; TLS handshakes for the name fail.
	Obtaining = "obtaining"
	// Valid: a certificate is served; renewal happens in the background.
	Valid = "valid"
	// Renewing: a certificate is served while its successor is obtained.
	Renewing = "renewing"
	// Expired: the served certificate has expired and renewal keeps failing.
	Expired = "expired"
)

// Cert is one managed certificate: one hostname of a proxy with
// [tls] acme = true.
type Cert struct {
	Name  string `json:"name"`
	State string `json:"state"`
	// The certificate served now, when there is one.
	NotAfter time.Time `json:"not_after,omitzero"`
	Issuer   string    `json:"issuer,omitempty"` // the issuing CA's common name
	Serial   string    `json:"serial,omitempty"` // hex
	// RenewAt is when the next renewal is due: the CA's ACME Renewal Info
	// (ARI) window when it sent one, else a third of the lifetime before
	// expiry.
	RenewAt time.Time `json:"renew_at,omitzero"`
	// Error is the last failure to obtain or renew, kept until a success.
	Error   string    `json:"error,omitempty"`
	ErrorAt time.Time `json:"error_at,omitzero"`
	// NextTry: while obtaining after a failure, when the next attempt is.
	NextTry time.Time `json:"next_try,omitzero"`
}
