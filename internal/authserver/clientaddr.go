package authserver

import (
	"net"
	"net/http"
	"net/netip"
)

// clientKey names the network a request comes from, for the limits that
// count per client: the address for IPv4, the /64 for IPv6 (one subscriber
// usually holds a whole /64, so counting single addresses would let one
// client multiply its allowance). RemoteAddr is the real client's address:
// the worker takes it from the supervisor's PROXY header, never from a
// client-supplied header.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}
