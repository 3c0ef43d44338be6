package syncer

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// keychain is Options.Keychain, with the plan's credentials put first for
// the upstream repositories they serve.
func (s *Syncer) keychain() (authn.Keychain, error) {
	kc := routeKeychain{next: s.opts.Keychain}
	var errs []error
	for _, c := range s.plan.Credentials {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("credentials for %s/%s: password file: %w", c.Host, c.Prefix, err))
			continue
		}
		kc.routes = append(kc.routes, routeAuth{
			host:   c.Host,
			prefix: c.Prefix,
			auth:   &authn.Basic{Username: c.Username, Password: strings.TrimSpace(string(pw))},
		})
	}
	return kc, errors.Join(errs...)
}

type routeAuth struct {
	host, prefix string
	auth         authn.Authenticator
}

type routeKeychain struct {
	routes []routeAuth
	next   authn.Keychain
}

func (k routeKeychain) Resolve(res authn.Resource) (authn.Authenticator, error) {
	repo, _ := res.(name.Repository)
	for _, r := range k.routes {
		if res.RegistryStr() == r.host && strings.HasPrefix(repo.RepositoryStr(), r.prefix) {
			return r.auth, nil
		}
	}
	return k.next.Resolve(res)
}
