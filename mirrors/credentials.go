package mirrors

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/happy-turtle/oci-proxy/oci"
)

// A storage service that no longer accepts the proxy's credentials (a key deleted or rotated, a
// policy withdrawn) refuses every blob with a 403, which a presence check must count as absent:
// S3 gives the same answer for a missing key to a reader that may not list the bucket. Such a
// mirror would look empty forever, all its traffic going to the upstream, and never unhealthy.
// ProbeKey, written by `oci-proxy sync` into every mirror it fills, is a key known to be there:
// its refusal means the credentials.

// credState is what the probe of ProbeKey last said of a mirror's credentials.
type credState uint32

const (
	credsUnchecked  credState = iota // no answer yet
	credsOK                          // the probe object was read
	credsNoProbe                     // accepted, but the probe object is not there (sync has not run)
	credsUnverified                  // the probe object is refused, but a blob was read
	credsRefused                     // the probe object is refused, and no blob could be read
)

// The values of MirrorHealth.Credentials, for a mirror with credentials.
const (
	CredentialsUnchecked  = "unchecked"
	CredentialsOK         = "ok"
	CredentialsNoProbe    = "no-probe"
	CredentialsUnverified = "unverified"
	CredentialsRefused    = "refused"
)

func (c credState) String() string {
	return [...]string{CredentialsUnchecked, CredentialsOK, CredentialsNoProbe, CredentialsUnverified, CredentialsRefused}[c]
}

// checkCredentials asks mirror i about its ProbeKey and records what the answer says of the
// credentials. A refusal is not taken at its word while a blob can still be read: a reader that
// may not list the bucket is refused a probe object that is missing (sync never ran there, or
// something else fills the bucket, or the configuration was just upgraded), and taking a mirror
// that serves out would send its traffic to the upstream. The blobs tried are the last one found
// on the mirror and evidence (one a client asks for), so a mirror taken out by mistake comes back
// with the first request for a blob it holds. It returns the refusal (wrapping ErrDenied), an
// error for which isBusy is true when the mirror is paced, or the error of a check that failed.
func (s *Selector) checkCredentials(ctx context.Context, i int, evidence *oci.Digest) error {
	m := s.mirrors[i]
	if s.paced(i, s.now().UnixNano()) {
		return errPaced
	}
	o, err := m.backend.Stat(ctx, ProbeKey(m.prefix))
	var te *ThrottledError
	switch {
	case err == nil:
		state := credsOK
		if !o.Exists {
			state = credsNoProbe
		}
		s.setCredentials(i, state, nil)
		s.succeeded(i)
		return nil
	case errors.Is(err, ErrDenied):
		if s.readable(ctx, i, evidence) {
			s.setCredentials(i, credsUnverified, nil)
			s.succeeded(i)
			return nil
		}
		err = s.describe(ctx, i, "probe", err)
		s.setCredentials(i, credsRefused, err)
		return err
	case errors.As(err, &te):
		s.pace(i, te)
		return fmt.Errorf("%w: %w", errPaced, s.describe(ctx, i, "probe", err))
	}
	return s.describe(ctx, i, "probe", err)
}

// readable reports whether mirror i serves one of its blobs now: the last one found there, else
// evidence.
func (s *Selector) readable(ctx context.Context, i int, evidence *oci.Digest) bool {
	m, st := s.mirrors[i], &s.state[i]
	found := st.found.Load()
	for _, d := range []*oci.Digest{found, evidence} {
		if d == nil {
			continue
		}
		o, err := m.backend.Stat(ctx, Key(m.prefix, *d))
		switch {
		case err == nil && o.Exists:
			st.found.Store(d)
			return true
		case err == nil && d == found:
			st.found.CompareAndSwap(found, nil) // deleted since: no longer proof of anything
		}
	}
	return false
}

// setCredentials records mirror i's credential state, logging each change once.
func (s *Selector) setCredentials(i int, c credState, err error) {
	m, st := s.mirrors[i], &s.state[i]
	if c == credsRefused {
		msg := "credentials refused: " + shortErr(err)
		st.denied.Store(&msg)
	}
	old := credState(st.creds.Swap(uint32(c)))
	if old == c {
		return
	}
	switch {
	case c == credsRefused:
		s.log.Warn("mirror credentials refused: not used until they are accepted", "mirror", m.name, "key", ProbeKey(m.prefix), "err", err.Error())
	case old == credsRefused:
		s.log.Info("mirror credentials accepted again", "mirror", m.name, "credentials", c.String())
	}
	if c == credsUnverified {
		s.log.Warn("mirror probe object refused though blobs are readable: the credentials cannot be checked until `oci-proxy sync` writes it (or the proxy may list the bucket)",
			"mirror", m.name, "key", ProbeKey(m.prefix))
	}
}

// checkUnchecked asks every enabled mirror with credentials that has not been probed yet about
// its ProbeKey, at once, so that an explanation made before Run's first round (`oci-proxy
// resolve`) knows which ones are refused. Failures are left to the checks that follow.
func (s *Selector) checkUnchecked(ctx context.Context) {
	var wg sync.WaitGroup
	for i, m := range s.mirrors {
		st := &s.state[i]
		if !m.enabled || !m.checkCreds || credState(st.creds.Load()) != credsUnchecked || !st.probing.CompareAndSwap(false, true) {
			continue
		}
		wg.Go(func() {
			defer st.probing.Store(false)
			cctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
			defer cancel()
			_ = s.checkCredentials(cctx, i, nil)
		})
	}
	wg.Wait()
}
