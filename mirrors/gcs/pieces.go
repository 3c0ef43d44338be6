package gcs

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"path"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
)

// maxCompose is the most source objects GCS takes in one compose request.
const maxCompose = 32

// cleanupTimeout bounds the deletion of an upload's temporary objects, on a context of its own:
// the upload's has often ended when they are deleted.
const cleanupTimeout = 30 * time.Second

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// pieced is one Upload in pieces: each piece a temporary object, composed into the key at the
// end.
type pieced struct {
	b    *Backend
	key  string
	size int64
	o    UploadOptions
	dir  string // the temporary objects' common prefix, ending in "/"
}

// pieceDir is where the temporary objects of an upload of key in pieces of size go: under
// tempPrefix, by the key's last element (a blob's hex digest) and the piece size, so that an
// upload with other pieces never takes them for its own.
func pieceDir(tempPrefix, key string, size int64) string {
	return fmt.Sprintf("%s%s/%d/", tempPrefix, path.Base(key), size)
}

func (p *pieced) piece(i int) string { return fmt.Sprintf("%s%05d", p.dir, i) }

// bodyFailure marks a failure of the body being uploaded: the pieces stored may hold wrong
// bytes, and are deleted even with Resume.
type bodyFailure struct{ err error }

func (e bodyFailure) Error() string { return e.err.Error() }
func (e bodyFailure) Unwrap() error { return e.err }

// run uploads body in pieces and composes them into the key. It returns the bytes of pieces an
// earlier upload had stored, read past and kept.
func (p *pieced) run(ctx context.Context, body io.Reader) (resumed int64, err error) {
	n := int((p.size + p.o.PieceSize - 1) / p.o.PieceSize)
	have := map[string]*storage.ObjectAttrs{}
	if p.o.Resume {
		have = p.existing(ctx)
	}
	temps := []string{} // every temporary object written or kept, to delete at the end
	defer func() {
		_, bodyErr := errors.AsType[bodyFailure](err)
		if err == nil || bodyErr || !p.o.Resume {
			p.cleanup(ctx, temps, have)
		}
	}()

	whole := crc32.New(castagnoli)
	body = io.TeeReader(body, whole)
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	slots := make(chan struct{}, max(p.o.Parallel, 1))
	var wg sync.WaitGroup
	names := make([]string, n)
	for i := range n {
		size := min(p.o.PieceSize, p.size-int64(i)*p.o.PieceSize)
		name := p.piece(i)
		names[i], temps = name, append(temps, name)
		select {
		case slots <- struct{}{}:
		case <-pctx.Done():
		}
		if pctx.Err() != nil {
			break
		}
		piece := crc32.New(castagnoli)
		r := io.TeeReader(io.LimitReader(body, size), piece)
		if a, ok := have[name]; ok && a.Size == size {
			// A piece appears only once its upload completed: it holds the bytes of this
			// blob, and they are read past, their checksum compared all the same.
			m, rerr := io.Copy(io.Discard, r)
			<-slots
			if rerr == nil && m < size {
				rerr = io.ErrUnexpectedEOF
			}
			if rerr == nil && piece.Sum32() != a.CRC32C {
				rerr = fmt.Errorf("piece %s holds other bytes", name)
			}
			if rerr != nil {
				if pctx.Err() == nil {
					rerr = bodyFailure{rerr}
				}
				cancel(rerr)
				break
			}
			resumed += size
			continue
		}
		w := p.b.bucket.Object(name).NewWriter(pctx)
		w.ChunkSize = p.o.chunk(size)
		w.ContentType = "application/octet-stream"
		w.ChunkRetryDeadline = time.Minute
		rr := &recordReader{r: r}
		var src io.Reader = rr
		if p.o.Progress != nil {
			src = &progressReader{r: rr, f: p.o.Progress}
		}
		m, werr := io.Copy(w, src)
		switch {
		case rr.err != nil && pctx.Err() != nil:
			werr = context.Cause(pctx) // the body stopped because the upload did
		case rr.err != nil:
			werr = bodyFailure{rr.err}
		case werr == nil && m < size:
			werr = bodyFailure{io.ErrUnexpectedEOF}
		case werr != nil:
			werr = fmt.Errorf("piece %s: %w", name, werr)
		}
		if werr != nil {
			cancel(werr) // before Close: the piece is not created
			_ = w.Close()
			<-slots
			break
		}
		// The next piece's bytes follow this one's: it starts while this one is finished.
		sum := piece.Sum32()
		wg.Go(func() {
			defer func() { <-slots }()
			if err := w.Close(); err != nil {
				cancel(fmt.Errorf("piece %s: %w", name, err))
				return
			}
			if got := w.Attrs().CRC32C; got != sum {
				cancel(bodyFailure{fmt.Errorf("piece %s: stored with CRC32C %08x, sent %08x", name, got, sum)})
			}
		})
	}
	wg.Wait()
	if err := context.Cause(pctx); err != nil {
		return resumed, err
	}
	// Read past the end: a body with more bytes is not the blob, and a body whose reader fails
	// at its end (a digest check, say) must not be stored either.
	var one [1]byte
	if m, rerr := io.ReadFull(body, one[:]); m > 0 {
		return resumed, bodyFailure{errors.New("body is longer than its size")}
	} else if rerr != io.EOF {
		return resumed, bodyFailure{rerr}
	}
	composites, err := p.compose(ctx, names, p.key, 0)
	temps = append(temps, composites...)
	if err != nil {
		return resumed, err
	}
	attrs, err := p.b.bucket.Object(p.key).Attrs(ctx)
	if err != nil {
		return resumed, fmt.Errorf("check the composed object: %w", err)
	}
	if attrs.Size != p.size || attrs.CRC32C != whole.Sum32() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		return resumed, bodyFailure{errors.Join(
			fmt.Errorf("the composed object has %d bytes and CRC32C %08x, want %d and %08x", attrs.Size, attrs.CRC32C, p.size, whole.Sum32()),
			p.b.Delete(dctx, p.key))}
	}
	return resumed, nil
}

// compose composes srcs into dst, through composites of at most maxCompose sources each when
// there are more (level numbers them), and returns the composites' names.
func (p *pieced) compose(ctx context.Context, srcs []string, dst string, level int) ([]string, error) {
	var made []string
	for len(srcs) > maxCompose {
		var next []string
		for i := 0; i < len(srcs); i += maxCompose {
			name := fmt.Sprintf("%sc%d-%05d", p.dir, level, i/maxCompose)
			if err := p.composeOne(ctx, srcs[i:min(i+maxCompose, len(srcs))], name); err != nil {
				return made, err
			}
			made = append(made, name)
			next = append(next, name)
		}
		srcs = next
		level++
	}
	return made, p.composeOne(ctx, srcs, dst)
}

func (p *pieced) composeOne(ctx context.Context, srcs []string, dst string) error {
	objs := make([]*storage.ObjectHandle, len(srcs))
	for i, s := range srcs {
		objs[i] = p.b.bucket.Object(s)
	}
	c := p.b.bucket.Object(dst).ComposerFrom(objs...)
	c.ContentType = "application/octet-stream"
	if _, err := c.Run(ctx); err != nil {
		return fmt.Errorf("compose %s: %w", dst, err)
	}
	return nil
}

// existing lists the pieces an earlier upload of the key stored, by name.
func (p *pieced) existing(ctx context.Context) map[string]*storage.ObjectAttrs {
	have := map[string]*storage.ObjectAttrs{}
	it := p.b.bucket.Objects(ctx, &storage.Query{Prefix: p.dir})
	for {
		a, err := it.Next()
		if err != nil {
			// A bucket that cannot be listed is written afresh: resuming saves time, it is
			// never needed for a correct copy.
			if !errors.Is(err, iterator.Done) {
				return map[string]*storage.ObjectAttrs{}
			}
			return have
		}
		if !strings.Contains(strings.TrimPrefix(a.Name, p.dir), "/") {
			have[a.Name] = a
		}
	}
}

// cleanup deletes the temporary objects of the upload (temps, and the pieces found in have),
// on a context of its own. Failures are left to the bucket's lifecycle rule (docs/SYNC.md).
func (p *pieced) cleanup(ctx context.Context, temps []string, have map[string]*storage.ObjectAttrs) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	seen := map[string]bool{}
	for _, name := range temps {
		seen[name] = true
	}
	for name := range have {
		if !seen[name] {
			temps = append(temps, name)
		}
	}
	for _, name := range temps {
		if err := p.b.bucket.Object(name).Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
			if ctx.Err() != nil {
				return
			}
		}
	}
}

// recordReader keeps the error its reader failed with, other than io.EOF.
type recordReader struct {
	r   io.Reader
	err error
}

func (r *recordReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
