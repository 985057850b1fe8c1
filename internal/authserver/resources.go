package authserver

import (
	"net/http"

	"github.com/mcpgate/mcpgate/internal/config"
	"github.com/mcpgate/mcpgate/internal/identity"
	"github.com/mcpgate/mcpgate/internal/policy"
)

// resolveResource decides the audience of the token a flow produces: the
// requested resource if it is one of this gateway's (RFC 8707), else the
// resource of the host the flow started on — never "every proxy". Policy
// decides which proxy owns which host.
func (s *Server) resolveResource(raw string, r *http.Request) (string, *config.Proxy, *oauthError) {
	if raw == "" {
		site, ok := s.o.Policy.Site(r.Host)
		if !ok || !site.Protected() {
			return "", nil, errInvalidTarget("this host is not a protected resource")
		}
		return site.ResourceURL(), site.Proxy, nil
	}
	site, err := s.o.Policy.Resource(raw)
	if err != nil {
		return "", nil, errInvalidTarget(err.Error())
	}
	return site.ResourceURL(), site.Proxy, nil
}

// member is what policy needs to know of a user.
func member(id *identity.User) policy.Member {
	return policy.Member{Login: id.Login, Orgs: id.Orgs, Teams: id.Teams}
}

// allowed: policy admits the user on p.
func (s *Server) allowed(p *config.Proxy, id *identity.User) bool {
	return s.o.Policy.Admit(p, member(id))
}

// grant computes the scopes a user gets for p.
func (s *Server) grant(p *config.Proxy, id *identity.User, requested []string) []string {
	return s.o.Policy.Scopes(p, member(id), requested)
}

// issuer is the issuer identifier for the host a request came to.
func issuer(r *http.Request) string {
	auth, _ := policy.Authority(r.Host)
	return "https://" + auth
}

// flowHost is the canonical authority a flow is bound to.
func flowHost(r *http.Request) string {
	auth, _ := policy.Authority(r.Host)
	return auth
}
