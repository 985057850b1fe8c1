package authserver

import (
	"net/http"
	"time"
)

// Dynamic registration allows registrationLimit registrations per client
// network (clientKey: the address, or the /64 for IPv6) and window. The
// count lives in the store, so every worker draws on the same budget: with
// one counter per process, each proxy added to the gateway would add a
// whole allowance.
const (
	registrationLimit  = 10
	registrationWindow = time.Minute
)

// allowRegistration counts a registration attempt from r's network and
// reports whether it is within the limit.
func (s *Server) allowRegistration(r *http.Request) (bool, error) {
	n, err := s.o.Store.CountEvent(r.Context(), "register "+clientKey(r), registrationWindow, s.now())
	if err != nil {
		return false, err
	}
	return n <= registrationLimit, nil
}
