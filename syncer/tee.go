package syncer

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/happy-turtle/oci-proxy/internal/brief"
	"github.com/happy-turtle/oci-proxy/mirrors"
)

// errMismatch is what the targets' uploads read instead of the end of a blob whose bytes do not
// hash to its digest, so that they abandon the upload rather than complete it.
var errMismatch = errors.New("upstream sent content that does not match the digest")

// Sizes of the buffers between the upstream read and the uploads.
const (
	// chunkBytes is one read of the upstream, shared by every upload that takes it.
	chunkBytes = 256 << 10
	// queueChunks is how far (in chunks, 2 MiB) an upload may lag behind the upstream read
	// before that read waits for it: a mirror that is busy sending a part or chunk does not
	// hold up the others until it is that far behind. Each upload holds its own part or chunk
	// buffers besides (see mirrors/s3.UploadOptions, mirrors/gcs.UploadOptions).
	queueChunks = 8
)

// outcome is one target's part of a transfer.
type outcome struct {
	err     error
	resumed int64 // bytes the target already held from an earlier, interrupted upload
	start   time.Time
	end     time.Time
}

// chunk is one read of the upstream, passed to every upload; the last upload to be done with it
// returns it to its pool.
type chunk struct {
	buf  []byte
	refs atomic.Int32
	pool chan []byte
}

func (c *chunk) release() {
	if c.refs.Add(-1) == 0 {
		select {
		case c.pool <- c.buf[:cap(c.buf)]:
		default:
		}
	}
}

// feed is one upload's side of a transfer: the chunks it has yet to take, and how far it got.
type feed struct {
	ch   chan *chunk
	done chan struct{} // closed when the upload has returned, for good
	// gone is closed when the upload (its first attempt) has returned: the tee sends it
	// nothing more.
	gone  chan struct{}
	live  *liveness
	taken atomic.Int64 // bytes the upload has read
	dead  bool         // the tee's view: the upload returned or was detached; send it nothing more
	// waited is how long the tee has waited for this feed's queue to have room (tee only).
	waited time.Duration
	// end is what the upload reads after the last chunk: io.EOF for a blob that checked out,
	// the reason otherwise. Set before ch is closed.
	end error
	// detached, set before ch is closed instead of end, says that the upload fell behind and
	// reads the rest of the blob from an upstream read of its own (see own).
	detached *detach
	// own is that read once it is open, and ownErr how it failed (the upload's goroutine only).
	own    *ownRead
	ownErr error
	// retried says that the upload failed on the mirror's side and was tried again from a
	// download of its own (the upload's goroutine only, read once it is done).
	retried bool
	ctx     context.Context
}

// detach is where a detached feed's own read of the upstream takes over from the tee: at byte
// from, with the digest's state over the bytes before it.
type detach struct {
	from   int64
	size   int64
	digest string // algorithm:hex
	state  []byte // the tee's hash, marshalled after from bytes
	open   func(ctx context.Context) (io.ReadCloser, error)
}

// openOwn opens f's own read of the blob and skips the bytes f had from the tee.
func (d *detach) openOwn(f *feed) (*ownRead, error) {
	alg, _, _ := strings.Cut(d.digest, ":")
	h := newHash(alg)
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(d.state); err != nil {
		// The state came from a hash of the same kind.
		panic(err)
	}
	body, err := d.open(connWait(f.ctx, f.live))
	if err != nil {
		return nil, fmt.Errorf("fetch from upstream again: %w", causeOf(f.ctx, err))
	}
	// The bytes before from went to the upload already: read past them.
	if _, err := io.CopyN(io.Discard, &touchReader{r: body, l: f.live}, d.from); err != nil {
		body.Close()
		if err == io.EOF {
			err = fmt.Errorf("upstream sent fewer than %d of %d bytes", d.from, d.size)
		}
		return nil, fmt.Errorf("fetch from upstream again: %w", causeOf(f.ctx, err))
	}
	return &ownRead{d: d, f: f, body: body, h: h, n: d.from}, nil
}

// touchReader records progress on l with every byte read through it.
type touchReader struct {
	r io.Reader
	l *liveness
}

func (t *touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.l.touch()
	}
	return n, err
}

// ownRead is the rest of a blob, from a detached feed's own read of the upstream: exactly the
// bytes that are left, hashed on from the tee's state, then io.EOF only if the whole blob
// checks out.
type ownRead struct {
	d    *detach
	f    *feed
	body io.ReadCloser
	h    hash.Hash
	n    int64 // bytes of the blob covered, the tee's included
	err  error // sticky
}

func (o *ownRead) Read(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.n == o.d.size {
		o.err = o.end()
		return 0, o.err
	}
	if left := o.d.size - o.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := o.body.Read(p)
	o.h.Write(p[:n])
	o.n += int64(n)
	switch {
	case err == io.EOF && o.n < o.d.size:
		o.err = fmt.Errorf("fetch from upstream again: upstream sent %d of %d bytes", o.n, o.d.size)
	case err != nil && err != io.EOF && o.n == o.d.size && o.sum() != o.d.digest:
		// go-containerregistry reports a digest mismatch as the error of the last read.
		o.err = errMismatch
	case err != nil && err != io.EOF:
		o.err = fmt.Errorf("fetch from upstream again: %w", causeOf(o.f.ctx, err))
	}
	if o.err != nil {
		return n, o.err
	}
	return n, nil
}

// end checks that the body ends where the blob does and that the blob hashes to its digest.
func (o *ownRead) end() error {
	var one [1]byte
	m, err := io.ReadFull(o.body, one[:])
	switch {
	case m > 0:
		return errMismatch
	case err != io.EOF && err != io.ErrUnexpectedEOF:
		if o.sum() != o.d.digest {
			return errMismatch
		}
		return fmt.Errorf("fetch from upstream again: %w", causeOf(o.f.ctx, err))
	}
	if o.sum() != o.d.digest {
		return errMismatch
	}
	return io.EOF
}

func (o *ownRead) sum() string {
	alg, _, _ := strings.Cut(o.d.digest, ":")
	return fmt.Sprintf("%s:%x", alg, o.h.Sum(nil))
}

// feedReader is what an upload reads: the chunks of its feed, in order.
type feedReader struct {
	f   *feed
	cur *chunk
	off int
	// bodyFailed says that the reader returned the blob's failure (the upstream's, or its own
	// read's), not its end: an upload that failed on that is not tried again.
	bodyFailed atomic.Bool
	// closed, once the upload has returned, makes any later read fail.
	closed atomic.Bool
}

var errReaderClosed = errors.New("read after the upload returned")

func (r *feedReader) failed() bool { return r.bodyFailed.Load() }

func (r *feedReader) Read(p []byte) (int, error) {
	if r.closed.Load() {
		return 0, errReaderClosed
	}
	if r.f.own != nil {
		n, err := r.f.own.Read(p)
		if n > 0 {
			r.f.taken.Add(int64(n))
			r.f.live.touch()
		}
		if err != nil && err != io.EOF {
			r.f.ownErr = err
			r.bodyFailed.Store(true)
		}
		return n, err
	}
	if r.cur == nil {
		resume := r.f.live.pause() // waiting for the upstream is not the mirror's stall
		var (
			c  *chunk
			ok bool
		)
		select {
		case c, ok = <-r.f.ch:
		case <-r.f.ctx.Done():
			resume()
			return 0, context.Cause(r.f.ctx)
		}
		resume()
		if !ok {
			if d := r.f.detached; d != nil {
				own, err := d.openOwn(r.f)
				if err != nil {
					r.f.ownErr = err
					r.bodyFailed.Store(true)
					return 0, err
				}
				r.f.own = own
				return r.Read(p)
			}
			if r.f.end != io.EOF {
				r.bodyFailed.Store(true)
			}
			return 0, r.f.end
		}
		r.cur, r.off = c, 0
	}
	n := copy(p, r.cur.buf[r.off:])
	r.off += n
	if r.off == len(r.cur.buf) {
		r.cur.release()
		r.cur = nil
	}
	r.f.taken.Add(int64(n))
	r.f.live.touch()
	return n, nil
}

// transfer downloads b once and streams it into the targets listed (indexes into r.s.targets)
// at the same time, checking its size and digest as it goes. The download goes as fast as the
// slowest target takes it, each target lagging at most queueChunks behind the download; a
// target that fails or stalls drops out without stopping the others. Only when the whole blob
// has arrived and checks out do the targets' uploads see its end; otherwise (wrong bytes, a body
// that ends early, fails or stalls) they fail, and the key is deleted on every target in case
// one stored something anyway. There is no deadline for the whole copy: each side fails when it
// has moved no byte for Options.Stall (see liveness). It returns one outcome per target.
func (r *run) transfer(ctx context.Context, p *remote.Puller, b *blob, targets []int) []outcome {
	outs := make([]outcome, len(targets))
	start := time.Now()
	setAll := func(err error) []outcome {
		for j := range outs {
			outs[j] = outcome{err: err, start: start, end: time.Now()}
		}
		return outs
	}
	size := b.desc.Size
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	up := newLiveness(start)
	feeds := make([]*feed, len(targets))
	sides := []*liveness{up}
	stops := []func(error){cancel}
	names := []string{"upstream"}
	cancels := make([]context.CancelCauseFunc, len(targets))
	for j, i := range targets {
		fctx, fcancel := context.WithCancelCause(ctx)
		cancels[j] = fcancel
		feeds[j] = &feed{ch: make(chan *chunk, queueChunks), done: make(chan struct{}), gone: make(chan struct{}), live: newLiveness(start), ctx: fctx}
		sides = append(sides, feeds[j].live)
		stops = append(stops, fcancel)
		names = append(names, "mirror "+r.s.targets[i].Name)
	}
	defer func() {
		for _, c := range cancels {
			c(nil)
		}
	}()
	wctx, wcancel := context.WithCancel(ctx)
	go watch(wctx, r.s.opts.Stall, sides, stops, names)
	defer wcancel()

	prog := r.s.opts.Progress.start(b.desc.Digest.String(), size, feeds)
	defer prog.finish()

	dref := b.repo.Digest(b.desc.Digest.String())
	layer, err := p.Layer(connWait(ctx, up), dref)
	if err != nil {
		return setAll(fmt.Errorf("fetch from upstream: %w", causeOf(ctx, err)))
	}
	body, err := layer.Compressed()
	if err != nil {
		return setAll(fmt.Errorf("fetch from upstream: %w", causeOf(ctx, err)))
	}
	defer body.Close()

	open := func(ctx context.Context) (io.ReadCloser, error) {
		layer, err := p.Layer(ctx, dref)
		if err != nil {
			return nil, err
		}
		return layer.Compressed()
	}
	var wg sync.WaitGroup
	for j, i := range targets {
		t, f := r.s.targets[i], feeds[j]
		key := mirrors.Key(t.Prefix, mustDigest(b.desc.Digest))
		wg.Go(func() {
			defer close(f.done)
			defer f.live.stop() // done: nothing more to charge
			defer func() {
				if f.own != nil {
					f.own.body.Close()
				}
			}()
			o := &outs[j]
			o.start = time.Now()
			fr := &feedReader{f: f}
			o.resumed, o.err = r.upload(f.ctx, t, key, fr, size, f.live.touch)
			fr.closed.Store(true) // a request's body may still be read after it returned
			close(f.gone)
			if o.err != nil && f.ctx.Err() == nil && !fr.failed() {
				// The mirror failed (a part or piece refused, a connection lost), not the blob,
				// and streamed requests are sent once: try once more, from a download of its
				// own; what the first attempt stored is resumed.
				r.s.log.Info("sync: upload failed, trying again", slog.String("mirror", t.Name),
					slog.String("digest", b.desc.Digest.String()), slog.String("err", brief.Error(o.err, maxReason)))
				f.retried = true
				o.resumed, o.err = r.retry(f, t, key, b, open)
			}
			o.end = time.Now()
			if o.err == nil && f.taken.Load() < size {
				o.err = errors.New("upload ended before the blob did")
			}
			if o.err != nil {
				o.err = fmt.Errorf("put: %w", causeOf(f.ctx, o.err))
			}
		})
	}

	pool := make(chan []byte, queueChunks+2)
	h := newHash(b.desc.Digest.Algorithm)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var n int64
	var readErr error
	stopped := false // every target failed or was detached: reading on is pointless
	for readErr == nil {
		var buf []byte
		select {
		case buf = <-pool:
		default:
			buf = make([]byte, min(chunkBytes, max(size, 1)))
		}
		m, err := readChunk(body, buf, up)
		if m > 0 {
			if n+int64(m) > size {
				readErr = errMismatch
				break
			}
			c := &chunk{buf: buf[:m], pool: pool}
			c.refs.Store(1) // the tee's own, dropped below
			live := 0
			resume := up.pause() // waiting for a mirror is not the upstream's stall
			for _, f := range feeds {
				if f.dead {
					continue
				}
				c.refs.Add(1)
				switch r.send(f, c, feeds, timer, start) {
				case sent:
					live++
				case gone:
					f.dead = true
					c.release()
				case behind:
					// It made the others wait too long: it reads the rest itself, from byte n,
					// and the others go on at their own pace.
					f.dead = true
					c.release()
					state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
					if err != nil {
						panic(err) // the standard library's hashes marshal
					}
					f.detached = &detach{from: n, size: size, digest: b.desc.Digest.String(), state: state, open: open}
					close(f.ch)
					r.s.log.Debug("sync: mirror detached", slog.String("mirror", names[1+slices.Index(feeds, f)]),
						slog.String("digest", b.desc.Digest.String()), slog.Int64("at", n))
				}
			}
			resume()
			h.Write(buf[:m])
			n += int64(m)
			c.release()
			if live == 0 {
				stopped = true
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			readErr = causeOf(ctx, err)
		}
	}
	up.stop() // the upstream's part is over: waiting for the uploads to finish is theirs
	// A detached target may take long yet: the shared download's connection is not kept for it.
	body.Close()
	got := fmt.Sprintf("%s:%x", b.desc.Digest.Algorithm, h.Sum(nil))
	// go-containerregistry checks the digest too and reports a mismatch as a read error at the
	// end; judged here from the bytes, so that the reason is the same either way.
	if n > size || (n == size && got != b.desc.Digest.String()) {
		readErr = errMismatch
	} else if readErr == nil && n < size && !stopped {
		readErr = fmt.Errorf("upstream sent %d of %d bytes", n, size)
	}
	for _, f := range feeds {
		if f.detached != nil {
			continue // closed when it was detached
		}
		f.end = io.EOF
		if readErr != nil {
			f.end = readErr
		}
		close(f.ch)
	}
	wg.Wait()
	for j, f := range feeds {
		// A detached target's outcome is its own read's.
		failed, mismatch := readErr, errors.Is(readErr, errMismatch)
		if f.detached != nil || f.retried {
			failed, mismatch = f.ownErr, errors.Is(f.ownErr, errMismatch)
		} else {
			switch {
			case mismatch:
				outs[j].err = readErr
			case readErr != nil:
				outs[j].err = fmt.Errorf("fetch from upstream: %w", readErr)
			}
		}
		if failed == nil {
			continue
		}
		// The target's upload read an error instead of the blob's end and should have stored
		// nothing, but a backend that keeps what it read may have.
		t := r.s.targets[targets[j]]
		key := mirrors.Key(t.Prefix, mustDigest(b.desc.Digest))
		if err := r.discard(ctx, t, key, size, mismatch); err != nil {
			outs[j].err = fmt.Errorf("%w; and delete: %w", outs[j].err, err)
		}
	}
	return outs
}

// retry uploads b to t again, from a download of its own from the blob's first byte, checked
// against the digest. The feed's queue is left to the collector.
func (r *run) retry(f *feed, t Target, key string, b *blob, open func(context.Context) (io.ReadCloser, error)) (int64, error) {
	h := newHash(b.desc.Digest.Algorithm)
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(err) // the standard library's hashes marshal
	}
	d := &detach{from: 0, size: b.desc.Size, digest: b.desc.Digest.String(), state: state, open: open}
	own, err := d.openOwn(f)
	if err != nil {
		f.ownErr = err
		return 0, err
	}
	defer own.body.Close()
	f.taken.Store(0)
	rr := &ownReader{f: f, own: own}
	resumed, err := r.upload(f.ctx, t, key, rr, b.desc.Size, f.live.touch)
	if err == nil && rr.n < b.desc.Size {
		err = errors.New("upload ended before the blob did")
	}
	return resumed, err
}

// ownReader is what a retried upload reads: its own download, counted like a feed.
type ownReader struct {
	f   *feed
	own *ownRead
	n   int64
}

func (r *ownReader) Read(p []byte) (int, error) {
	n, err := r.own.Read(p)
	if n > 0 {
		r.n += int64(n)
		r.f.taken.Add(int64(n))
		r.f.live.touch()
	}
	if err != nil && err != io.EOF {
		r.f.ownErr = err
	}
	return n, err
}

// sendResult is what became of a chunk offered to a feed.
type sendResult int

const (
	sent   sendResult = iota // queued
	gone                     // the upload has returned
	behind                   // the feed made the others wait for longer than Options.Detach
)

// send queues c on f. While another target still takes the download, the tee waits for f's
// queue to have room only so long (see Options.Detach): for Detach at a stretch (f is hung, or
// nearly), and, over the whole copy (which began at begun), for at least Detach and more than
// half of the copy's time (f is less than half as fast as the others). A mirror that is slow
// but not that slow keeps pacing the download, which costs the others some time but the
// upstream nothing more. The last target left is waited for as long as it takes (its own
// watchdog ends a stall).
func (r *run) send(f *feed, c *chunk, feeds []*feed, timer *time.Timer, begun time.Time) sendResult {
	select {
	case f.ch <- c:
		return sent
	case <-f.gone:
		return gone
	default:
	}
	alone := true
	for _, g := range feeds {
		if g != f && !g.dead {
			alone = false
			break
		}
	}
	if alone {
		select {
		case f.ch <- c:
			return sent
		case <-f.gone:
			return gone
		}
	}
	start := time.Now()
	// Detached after a wait of w once w ≥ Detach, or f.waited + w ≥ max(Detach, (elapsed+w)/2).
	x, elapsed := r.s.opts.Detach, start.Sub(begun)
	timer.Reset(min(x, max(x-f.waited, elapsed-2*f.waited)))
	defer func() {
		timer.Stop()
		f.waited += time.Since(start)
	}()
	select {
	case f.ch <- c:
		return sent
	case <-f.gone:
		return gone
	case <-timer.C:
		return behind
	}
}

// readChunk fills buf from body as far as it goes, recording progress on up with every read.
func readChunk(body io.Reader, buf []byte, up *liveness) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := body.Read(buf[n:])
		n += m
		if m > 0 {
			up.touch()
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// upload stores size bytes of body under key on t, with its Uploader when it has one.
func (r *run) upload(ctx context.Context, t Target, key string, body io.Reader, size int64, progress func()) (int64, error) {
	if t.Uploader != nil {
		return t.Uploader.Upload(ctx, key, body, size, func(int64) { progress() })
	}
	return 0, t.Writer.Put(ctx, key, body, size)
}

// causeOf puts the reason ctx ended (a stall, say) in front of err, which often says only
// "context canceled".
func causeOf(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
		return fmt.Errorf("%w: %w", cause, err)
	}
	return err
}

// discard deletes key from t after a transfer of a blob of size bytes failed on the upstream's
// side, on a context of its own: a copy cut off must still clean up. After wrong bytes
// (mismatch) the key goes whatever it holds. After a body that ended early or failed, an object
// of the blob's full size cannot have come from this transfer, which passed on fewer bytes:
// another run copied the same blob meanwhile, and it stays.
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
