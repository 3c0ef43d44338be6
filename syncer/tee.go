package syncer

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/mirrors"
)

// errMismatch is what the targets' uploads read instead of the end of a blob whose bytes do not
// hash to its digest, so that they abandon the upload rather than complete it.
var errMismatch = errors.New("upstream sent content that does not match the digest")

// transfer downloads b once and streams it into the targets listed (indexes into r.s.targets)
// at the same time, checking its size and digest as it goes. The slowest target paces the
// download; a target that fails drops out without stopping the others. Only when the whole blob
// has arrived and checks out do the targets' uploads see its end; otherwise (wrong bytes, a body
// that ends early or fails, a deadline) they fail, and the key is deleted on every target in case
// one stored something anyway. It returns one error per target.
func (r *run) transfer(ctx context.Context, p *remote.Puller, b *blob, targets []int) []error {
	errs := make([]error, len(targets))
	setAll := func(err error) {
		for j := range errs {
			errs[j] = err
		}
	}
	size := b.desc.Size
	ctx, cancel := context.WithTimeout(ctx, r.s.opts.Timeout+time.Duration(size/minRate)*time.Second)
	defer cancel()
	dref := b.repo.Digest(b.desc.Digest.String())
	layer, err := p.Layer(ctx, dref)
	if err != nil {
		setAll(fmt.Errorf("fetch from upstream: %w", err))
		return errs
	}
	body, err := layer.Compressed()
	if err != nil {
		setAll(fmt.Errorf("fetch from upstream: %w", err))
		return errs
	}
	defer body.Close()

	type upload struct {
		pw   *io.PipeWriter
		done chan error
		dead bool
		key  string
	}
	ups := make([]*upload, len(targets))
	for j, i := range targets {
		t := r.s.targets[i]
		pr, pw := io.Pipe()
		u := &upload{pw: pw, done: make(chan error, 1), key: mirrors.Key(t.Prefix, mustDigest(b.desc.Digest))}
		ups[j] = u
		go func() {
			err := t.Writer.Put(ctx, u.key, pr, size)
			if err == nil {
				err = errors.New("upload ended before the blob did") // unblocks the writer
				pr.CloseWithError(err)
				u.done <- nil
				return
			}
			pr.CloseWithError(err)
			u.done <- err
		}()
	}

	h := newHash(b.desc.Digest.Algorithm)
	buf := make([]byte, 256<<10)
	var n int64
	var readErr error
	stopped := false // every target failed: reading on is pointless
	for {
		m, err := body.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			n += int64(m)
			if n > size {
				readErr = errMismatch
				break
			}
			live := 0
			for _, u := range ups {
				if u.dead {
					continue
				}
				if _, werr := u.pw.Write(buf[:m]); werr != nil {
					u.dead = true
					continue
				}
				live++
			}
			if live == 0 {
				stopped = true
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = err
			break
		}
	}
	got := fmt.Sprintf("%s:%x", b.desc.Digest.Algorithm, h.Sum(nil))
	// go-containerregistry checks the digest too and reports a mismatch as a read error at the
	// end; judged here from the bytes, so that the reason is the same either way.
	if n > size || (n == size && got != b.desc.Digest.String()) {
		readErr = errMismatch
	} else if readErr == nil && n < size && !stopped {
		readErr = fmt.Errorf("upstream sent %d of %d bytes", n, size)
	}
	for _, u := range ups {
		if readErr != nil {
			u.pw.CloseWithError(readErr)
		} else {
			u.pw.Close()
		}
	}
	for j, u := range ups {
		perr := <-u.done
		switch {
		case readErr != nil:
			errs[j] = readErr
			if !errors.Is(readErr, errMismatch) {
				errs[j] = fmt.Errorf("fetch from upstream: %w", readErr)
			}
		case perr != nil:
			errs[j] = fmt.Errorf("put: %w", perr)
		}
	}
	if readErr != nil {
		// The targets' uploads read an error instead of the blob's end and should have stored
		// nothing, but a backend that keeps what it read may have.
		for j, i := range targets {
			if err := r.discard(ctx, r.s.targets[i], ups[j].key, size, errors.Is(readErr, errMismatch)); err != nil {
				errs[j] = fmt.Errorf("%w; and delete: %w", errs[j], err)
			}
		}
	}
	return errs
}

// discard deletes key from t after a transfer of a blob of size bytes failed on the upstream's
// side, on a context of its own: a copy cut off by its deadline must still clean up. After wrong
// bytes (mismatch) the key goes whatever it holds. After a body that ended early or failed, an
// object of the blob's full size cannot have come from this transfer, which passed on fewer
// bytes: another run copied the same blob meanwhile, and it stays.
func (r *run) discard(ctx context.Context, t Target, key string, size int64, mismatch bool) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.s.opts.Timeout)
	defer cancel()
	if !mismatch {
		// A failed Stat deletes anyway: a partial object would be served as the blob.
		if obj, err := t.Writer.Stat(ctx, key); err == nil && (!obj.Exists || obj.Size == size) {
			return nil
		}
	}
	return t.Writer.Delete(ctx, key)
}

func newHash(alg string) hash.Hash {
	switch alg {
	case "sha256":
		return sha256.New()
	case "sha512":
		return sha512.New()
	}
	return nil
}
