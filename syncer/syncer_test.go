package syncer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/happy-turtle/oci-proxy/internal/testenv"
	"github.com/happy-turtle/oci-proxy/mirrors"
	"github.com/happy-turtle/oci-proxy/oci"
	"github.com/happy-turtle/oci-proxy/upstream"
)

// fakeStore is an in-memory mirrors.Writer. Like a careless backend, it keeps whatever it read
// even when the body fails, so that a test sees whether the syncer cleans up.
type fakeStore struct {
	mu      sync.Mutex
	objects map[string][]byte
	puts    map[string]int
	statErr error
}

func newFakeStore() *fakeStore {
	return &fakeStore{objects: map[string][]byte{}, puts: map[string]int{}}
}

func (f *fakeStore) Stat(_ context.Context, key string) (mirrors.Object, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statErr != nil {
		return mirrors.Object{}, f.statErr
	}
	b, ok := f.objects[key]
	if !ok {
		return mirrors.Object{Size: -1}, nil
	}
	return mirrors.Object{Exists: true, Size: int64(len(b))}, nil
}

func (f *fakeStore) URL(context.Context, string, string, time.Duration) (*url.URL, time.Time, error) {
	return nil, time.Time{}, errors.New("not signing")
}

func (f *fakeStore) Put(_ context.Context, key string, body io.Reader, size int64) error {
	b, err := io.ReadAll(body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts[key]++
	f.objects[key] = b
	if err != nil {
		return err
	}
	if int64(len(b)) != size {
		return errors.New("wrong size")
	}
	return nil
}

func (f *fakeStore) Delete(_ context.Context, key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.objects, key)
	return nil
}

// isProbe tells the probe object, which every run writes, from the blobs.
func isProbe(key string) bool { return strings.HasSuffix(key, mirrors.ProbeKey("")) }

// digests lists the stored blobs as digests, sorted, checking each object's content.
func (f *fakeStore) digests(t *testing.T, prefix string) []string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k, b := range f.objects {
		if isProbe(k) {
			continue
		}
		d := "sha256:" + strings.TrimPrefix(k, prefix+"sha256/")
		h, _, err := v1.SHA256(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if h.String() != d {
			t.Errorf("object %s holds content of digest %s", k, h)
		}
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

func (f *fakeStore) maxPuts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, c := range f.puts {
		if !isProbe(k) {
			n = max(n, c)
		}
	}
	return n
}

// putCount counts the writes of blobs.
func (f *fakeStore) putCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, c := range f.puts {
		if !isProbe(k) {
			n += c
		}
	}
	return n
}

// upstreamRegistry is go-containerregistry's in-memory registry behind httptest, under the path
// prefix "acme/" as seen by the proxy's configuration. corrupt names blobs it serves with their
// bytes changed.
type upstreamRegistry struct {
	srv     *httptest.Server
	host    string
	mu      sync.Mutex
	corrupt map[string]bool
	// corruptAfter names blobs served intact that many times, and changed from then on.
	corruptAfter map[string]int
	gets         map[string]int // GETs of each blob, by digest
}

func startUpstream(t *testing.T) *upstreamRegistry {
	t.Helper()
	u := &upstreamRegistry{corrupt: map[string]bool{}, corruptAfter: map[string]int{}, gets: map[string]int{}}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		bad := false
		if _, d, ok := strings.Cut(r.URL.Path, "/blobs/"); ok && r.Method == http.MethodGet {
			u.gets[d]++
			n, later := u.corruptAfter[d]
			bad = u.corrupt[d] || (later && u.gets[d] > n)
		}
		u.mu.Unlock()
		if !bad {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if len(body) > 0 {
			body[len(body)/2] ^= 0xff
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(u.srv.Close)
	u.host = strings.TrimPrefix(u.srv.URL, "http://")
	return u
}

func (u *upstreamRegistry) getCount(digest string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.gets[digest]
}

func (u *upstreamRegistry) ref(t *testing.T, repoRef string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(u.host+"/acme/"+repoRef, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (u *upstreamRegistry) push(t *testing.T, repoTag string, img v1.Image) []string {
	t.Helper()
	if err := remote.Write(u.ref(t, repoTag), img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return testenv.Describe(t, img).Blobs()
}

func (u *upstreamRegistry) pushIndex(t *testing.T, repoTag string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(u.ref(t, repoTag), idx); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
}

func randomImage(t *testing.T, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(2048, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// twoPlatformIndex returns an index of two random images (linux/amd64, linux/arm64) and their
// blobs.
func twoPlatformIndex(t *testing.T) (v1.ImageIndex, []v1.Image, []string) {
	t.Helper()
	var adds []mutate.IndexAddendum
	var imgs []v1.Image
	var blobs []string
	for _, p := range []string{"linux/amd64", "linux/arm64"} {
		img := randomImage(t, 2)
		plat, _ := v1.ParsePlatform(p)
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
		imgs = append(imgs, img)
		blobs = append(blobs, testenv.Describe(t, img).Blobs()...)
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...), imgs, blobs
}

const testPrefix = "blobs/"

// setup returns a syncer over u for repos, with two fake targets.
func setup(t *testing.T, u *upstreamRegistry, repos []Repository, opts Options, skipped ...SkippedMirror) (*Syncer, *fakeStore, *fakeStore) {
	t.Helper()
	base, err := url.Parse(u.srv.URL + "/v2/acme/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := newFakeStore(), newFakeStore()
	targets := []Target{{Name: "a", Prefix: testPrefix, Writer: a}, {Name: "b", Prefix: "", Writer: b}}
	return New(Plan{Repositories: repos, Skipped: skipped}, ups, targets, opts), a, b
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return slices.Compact(s)
}

func runAll(t *testing.T, s *Syncer) Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := s.All(ctx)
	if err != nil {
		t.Fatalf("All: %v", err)
	}
	return rep
}

func TestAllCopiesEveryBlobOnce(t *testing.T) {
	u := startUpstream(t)
	img := randomImage(t, 3)
	imgBlobs := u.push(t, "app:1.0", img)
	u.push(t, "app:latest", img) // the same image under a second tag
	idx, _, idxBlobs := twoPlatformIndex(t)
	u.pushIndex(t, "multi:1.0", idx)

	s, a, b := setup(t, u, []Repository{{Name: "app"}, {Name: "multi"}}, Options{Concurrency: 3},
		SkippedMirror{"web", "not writable (http mirror)"}, SkippedMirror{"off", "disabled"})
	rep := runAll(t, s)

	want := sorted(append(slices.Clone(imgBlobs), idxBlobs...))
	if diff := cmp.Diff(want, a.digests(t, testPrefix)); diff != "" {
		t.Errorf("target a blobs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, b.digests(t, "")); diff != "" {
		t.Errorf("target b blobs (-want +got):\n%s", diff)
	}
	if n := a.maxPuts(); n != 1 {
		t.Errorf("a blob was written %d times, want once", n)
	}
	if rep.Failures() != 0 || rep.Blobs != len(want) || rep.Manifests != 4 {
		t.Errorf("report: %d failures, %d blobs, %d manifests; want 0, %d, 4\n%+v", rep.Failures(), rep.Blobs, rep.Manifests, len(want), rep)
	}
	var total int64
	for _, tr := range rep.Targets[:2] {
		if tr.Copied != len(want) || tr.Present != 0 {
			t.Errorf("target %s: copied %d, present %d; want %d, 0", tr.Name, tr.Copied, tr.Present, len(want))
		}
		total += tr.CopiedBytes
	}
	if total == 0 {
		t.Error("no bytes counted")
	}
	wantSkipped := []TargetReport{{Name: "web", Skipped: "not writable (http mirror)"}, {Name: "off", Skipped: "disabled"}}
	if diff := cmp.Diff(wantSkipped, rep.Targets[2:]); diff != "" {
		t.Errorf("skipped targets (-want +got):\n%s", diff)
	}

	// Everything is there now: a second run finds it all and writes nothing.
	puts := a.putCount() + b.putCount()
	rep = runAll(t, s)
	if got := a.putCount() + b.putCount(); got != puts {
		t.Errorf("second run wrote %d objects, want none", got-puts)
	}
	for _, tr := range rep.Targets[:2] {
		if tr.Present != len(want) || tr.Copied != 0 {
			t.Errorf("second run, target %s: present %d, copied %d; want %d, 0", tr.Name, tr.Present, tr.Copied, len(want))
		}
	}
}

func TestAllTagGlobs(t *testing.T) {
	u := startUpstream(t)
	b10 := u.push(t, "app:1.0", randomImage(t, 1))
	b11 := u.push(t, "app:1.1", randomImage(t, 1))
	u.push(t, "app:2.0", randomImage(t, 1))
	bl := u.push(t, "app:latest", randomImage(t, 1))
	u.push(t, "other:1.0", randomImage(t, 1)) // not configured

	s, a, _ := setup(t, u, []Repository{{Name: "app", Tags: []string{"1.*", "latest"}}}, Options{})
	rep := runAll(t, s)
	want := sorted(slices.Concat(b10, b11, bl))
	if diff := cmp.Diff(want, a.digests(t, testPrefix)); diff != "" {
		t.Errorf("blobs (-want +got):\n%s", diff)
	}
	wantSkip := []Skip{{Repository: "app", Ref: "2.0", Reason: "tag matches none of 1.*, latest"}}
	if diff := cmp.Diff(wantSkip, rep.Skipped); diff != "" {
		t.Errorf("skipped (-want +got):\n%s", diff)
	}
}

func TestAllDryRun(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 2))
	s, a, b := setup(t, u, []Repository{{Name: "app"}}, Options{DryRun: true})
	// One blob is already on a.
	present := blobFor(t, u, "app", blobs[1])
	a.objects[testPrefix+"sha256/"+strings.TrimPrefix(blobs[1], "sha256:")] = present

	rep := runAll(t, s)
	if n := a.putCount() + b.putCount(); n != 0 {
		t.Errorf("dry run wrote %d objects", n)
	}
	if !rep.DryRun {
		t.Error("report does not say dry run")
	}
	got := []int{rep.Targets[0].Present, rep.Targets[0].Copied, rep.Targets[1].Present, rep.Targets[1].Copied}
	if want := []int{1, len(blobs) - 1, 0, len(blobs)}; !slices.Equal(got, want) {
		t.Errorf("present/copied of a and b = %v, want %v", got, want)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "dry run") || !strings.Contains(text.String(), "to copy") {
		t.Errorf("text report does not say it was a dry run:\n%s", text.String())
	}
}

// blobFor fetches a blob's bytes from the upstream.
func blobFor(t *testing.T, u *upstreamRegistry, repo, digest string) []byte {
	t.Helper()
	l, err := remote.Layer(u.ref(t, repo+"@"+digest).(name.Digest))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAllPresentBlobsSkipped(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 2))
	s, a, _ := setup(t, u, []Repository{{Name: "app"}}, Options{})
	key := testPrefix + "sha256/" + strings.TrimPrefix(blobs[0], "sha256:")
	a.objects[key] = blobFor(t, u, "app", blobs[0])
	rep := runAll(t, s)
	if a.puts[key] != 0 {
		t.Errorf("present blob written %d times", a.puts[key])
	}
	if tr := rep.Targets[0]; tr.Present != 1 || tr.Copied != len(blobs)-1 {
		t.Errorf("target a: present %d, copied %d; want 1, %d", tr.Present, tr.Copied, len(blobs)-1)
	}
}

func TestAllWrongBytesFromUpstream(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 2))
	bad := blobs[1]
	u.corrupt[bad] = true
	s, a, b := setup(t, u, []Repository{{Name: "app"}}, Options{})
	rep := runAll(t, s)

	want := sorted(slices.DeleteFunc(slices.Clone(blobs), func(d string) bool { return d == bad }))
	if diff := cmp.Diff(want, a.digests(t, testPrefix)); diff != "" {
		t.Errorf("target a blobs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, b.digests(t, "")); diff != "" {
		t.Errorf("target b blobs (-want +got):\n%s", diff)
	}
	if a.puts[testPrefix+"sha256/"+strings.TrimPrefix(bad, "sha256:")] != 1 {
		t.Error("the corrupt blob was never tried")
	}
	for _, tr := range rep.Targets[:2] {
		if len(tr.Failed) != 1 || tr.Failed[0].Digest != bad || !strings.Contains(tr.Failed[0].Reason, "does not match the digest") {
			t.Errorf("target %s failures = %+v, want one for %s with a digest mismatch", tr.Name, tr.Failed, bad)
		}
		if tr.Copied != len(blobs)-1 {
			t.Errorf("target %s copied %d, want %d", tr.Name, tr.Copied, len(blobs)-1)
		}
	}
	if rep.Failures() != 2 {
		t.Errorf("Failures() = %d, want 2", rep.Failures())
	}
}

func TestAllStatError(t *testing.T) {
	u := startUpstream(t)
	blobs := u.push(t, "app:1.0", randomImage(t, 1))
	s, a, b := setup(t, u, []Repository{{Name: "app"}}, Options{})
	a.statErr = errors.New("service unavailable")
	rep := runAll(t, s)
	if len(rep.Targets[0].Failed) != len(blobs) || a.putCount() != 0 {
		t.Errorf("target a: %d failures, %d writes; want %d, 0", len(rep.Targets[0].Failed), a.putCount(), len(blobs))
	}
	if rep.Targets[1].Copied != len(blobs) || len(b.digests(t, "")) != len(blobs) {
		t.Errorf("target b: copied %d, want %d despite a's failures", rep.Targets[1].Copied, len(blobs))
	}
}

func TestAllUnreachableUpstream(t *testing.T) {
	u := startUpstream(t)
	s, _, _ := setup(t, u, []Repository{{Name: "app"}}, Options{Timeout: 5 * time.Second})
	u.srv.Close()
	rep := runAll(t, s)
	if len(rep.Errors) != 1 || rep.Errors[0].Repository != "app" || !strings.Contains(rep.Errors[0].Reason, "list tags") {
		t.Errorf("errors = %+v, want one listing app's tags", rep.Errors)
	}
	if rep.Failures() != 1 {
		t.Errorf("Failures() = %d, want 1", rep.Failures())
	}
}

func TestRef(t *testing.T) {
	u := startUpstream(t)
	appBlobs := u.push(t, "app:1.0", randomImage(t, 2))
	idx, imgs, _ := twoPlatformIndex(t)
	u.pushIndex(t, "multi:2.0", idx)
	arm, err := imgs[1].Digest()
	if err != nil {
		t.Fatal(err)
	}
	repos := []Repository{{Name: "app", Tags: []string{"1.*"}}, {Name: "multi", Tags: []string{"1.*"}}}

	tests := []struct {
		name      string
		repo, ref string
		want      []string
		wantSkip  []Skip
	}{
		{name: "tag", repo: "app", ref: "1.0", want: appBlobs},
		{name: "digest of an index's image, whatever the globs", repo: "multi", ref: arm.String(), want: testenv.Describe(t, imgs[1]).Blobs()},
		{name: "unconfigured repository", repo: "nope", ref: "1.0",
			wantSkip: []Skip{{Repository: "nope", Ref: "1.0", Reason: "not in sync.repositories"}}},
		{name: "tag outside the globs", repo: "multi", ref: "2.0",
			wantSkip: []Skip{{Repository: "multi", Ref: "2.0", Reason: "tag matches none of 1.*"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, a, _ := setup(t, u, repos, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rf, err := oci.ParseReference(tt.ref)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := s.Ref(ctx, tt.repo, rf)
			if err != nil {
				t.Fatalf("Ref: %v", err)
			}
			if rep.Failures() != 0 {
				t.Errorf("failures: %+v", rep)
			}
			if diff := cmp.Diff(sorted(tt.want), a.digests(t, testPrefix)); diff != "" {
				t.Errorf("blobs (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSkip, rep.Skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReportJSONAndText(t *testing.T) {
	rep := Report{
		Blobs: 3, Manifests: 1, Seconds: 1.25,
		Targets: []TargetReport{
			{Name: "s3-us", Present: 1, Copied: 1, CopiedBytes: 3 << 20, ResumedBytes: 1 << 20, Seconds: 2, Failed: []Problem{{Digest: "sha256:abc", Reason: "put: denied"}}},
			{Name: "web", Skipped: "not writable (http mirror)"},
		},
		Skipped: []Skip{{Repository: "app", Ref: "2.0", Reason: "tag matches none of 1.*"}},
		Errors:  []Problem{{Repository: "lib", Reason: "list tags: unauthorized"}},
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep, back); diff != "" {
		t.Errorf("JSON round trip (-want +got):\n%s", diff)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	want := `sync: 1 manifests, 3 blobs, 2 failures in 1.2s
  mirror s3-us: 1 present, 1 copied (3.0 MiB in 2.0s, 1.0 MiB/s, 1.0 MiB resumed), 1 failed
    failed sha256:abc: put: denied
  mirror web: skipped: not writable (http mirror)
  error lib: list tags: unauthorized
  skipped app:2.0: tag matches none of 1.*
`
	if diff := cmp.Diff(want, text.String()); diff != "" {
		t.Errorf("text (-want +got):\n%s", diff)
	}
}

// gatedWriter holds every Put of a blob until release is closed, telling started about each one.
type gatedWriter struct {
	*fakeStore
	started chan struct{}
	release chan struct{}
}

func (g *gatedWriter) Put(ctx context.Context, key string, body io.Reader, size int64) error {
	if isProbe(key) {
		return g.fakeStore.Put(ctx, key, body, size)
	}
	g.started <- struct{}{}
	<-g.release
	return g.fakeStore.Put(ctx, key, body, size)
}

// A stop starts no new copy and lets the one under way finish.
func TestWithStop(t *testing.T) {
	u := startUpstream(t)
	img := testenv.OCIImage(t, 3, 512, "linux/amd64")
	blobs := u.push(t, "app:1.0", img)
	base, err := url.Parse(u.srv.URL + "/v2/acme/")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := upstream.NewTable(base, nil)
	if err != nil {
		t.Fatal(err)
	}
	g := &gatedWriter{fakeStore: newFakeStore(), started: make(chan struct{}, 10), release: make(chan struct{})}
	s := New(Plan{Repositories: []Repository{{Name: "app"}}}, ups, []Target{{Name: "a", Prefix: testPrefix, Writer: g}}, Options{Concurrency: 1})
	stop := make(chan struct{})
	type result struct {
		rep Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := s.All(WithStop(context.Background(), stop))
		done <- result{rep, err}
	}()
	<-g.started // the first copy is under way
	close(stop)
	close(g.release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	copied := len(g.digests(t, testPrefix))
	if copied != 1 || r.rep.NotStarted != len(blobs)-1 || r.rep.Failures() != len(blobs)-1 {
		t.Errorf("after a stop mid-copy: %d copied, %d not started, %d failures; want 1, %d, %d",
			copied, r.rep.NotStarted, r.rep.Failures(), len(blobs)-1, len(blobs)-1)
	}
}

// RefAt reads the manifest a push notification named by its digest, the tag deciding only
// whether to copy: a tag that points elsewhere (or nowhere yet) does not matter.
func TestRefAt(t *testing.T) {
	u := startUpstream(t)
	u.push(t, "app:1.0", randomImage(t, 1))
	pushed := randomImage(t, 2)
	newBlobs := u.push(t, "app:other", pushed)
	d, err := pushed.Digest()
	if err != nil {
		t.Fatal(err)
	}
	at, err := oci.ParseDigest(d.String())
	if err != nil {
		t.Fatal(err)
	}
	repos := []Repository{{Name: "app", Tags: []string{"1.*"}}}
	for _, tt := range []struct {
		name, tag string
		want      []string
	}{
		{name: "tag moved on", tag: "1.0", want: newBlobs},
		{name: "tag not there yet", tag: "1.5", want: newBlobs},
		{name: "tag outside the globs", tag: "2.0", want: nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, a, _ := setup(t, u, repos, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rf, err := oci.ParseReference(tt.tag)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := s.RefAt(ctx, "app", rf, at)
			if err != nil || rep.Failures() != 0 {
				t.Fatalf("RefAt: %v, %+v", err, rep)
			}
			if diff := cmp.Diff(sorted(tt.want), a.digests(t, testPrefix)); diff != "" {
				t.Errorf("blobs (-want +got):\n%s", diff)
			}
		})
	}
}
