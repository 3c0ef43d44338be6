package testenv

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// pushTimeout bounds one push of a test image or index (a few small blobs on loopback).
const pushTimeout = 2 * time.Minute

// Image is what a push wrote: enough to check what clients pull and where each blob is sent.
type Image struct {
	Ref       string          // as pushed: HOST/repo:tag
	Digest    string          // of the manifest, or of the index for an index
	MediaType types.MediaType // of that manifest or index
	Platform  string          // "linux/amd64" for an image; "" for an index
	Config    string          // digest of the config blob; "" for an index
	Layers    []string        // digests of the layer blobs, in order; nil for an index
	Manifests []Image         // an index's child images, in index order
}

// Blobs returns the digests of every blob reachable from the image: the config and layers, or
// those of every child of an index.
func (im Image) Blobs() []string {
	var out []string
	if im.Config != "" {
		out = append(out, im.Config)
	}
	out = append(out, im.Layers...)
	for _, c := range im.Manifests {
		out = append(out, c.Blobs()...)
	}
	return out
}

// Child returns the index's image for platform ("linux/arm64"), failing the test if it has none.
func (im Image) Child(t testing.TB, platform string) Image {
	t.Helper()
	for _, c := range im.Manifests {
		if c.Platform == platform {
			return c
		}
	}
	t.Fatalf("%s has no image for %s", im.Ref, platform)
	return Image{}
}

// OCIImage returns a random OCI image (OCI manifest, config and gzip layer media types) with
// layers layers of about layerSize bytes each, for platform "os/arch[/variant]". The layers are
// real tar.gz files and the config names the platform, so docker and podman can pull it.
func OCIImage(t testing.TB, layers int, layerSize int64, platform string) v1.Image {
	t.Helper()
	return randomImage(t, layers, layerSize, platform, types.OCIManifestSchema1, types.OCIConfigJSON, types.OCILayer)
}

// DockerImage is OCIImage with Docker schema 2 media types throughout.
func DockerImage(t testing.TB, layers int, layerSize int64, platform string) v1.Image {
	t.Helper()
	return randomImage(t, layers, layerSize, platform, types.DockerManifestSchema2, types.DockerConfigJSON, types.DockerLayer)
}

// OCIIndex returns an OCI image index holding one random multi-layer OCI image per platform.
func OCIIndex(t testing.TB, layers int, layerSize int64, platforms ...string) v1.ImageIndex {
	t.Helper()
	var adds []mutate.IndexAddendum
	for _, p := range platforms {
		img := OCIImage(t, layers, layerSize, p)
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			t.Fatalf("platform %q: %v", p, err)
		}
		adds = append(adds, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: plat},
		})
	}
	return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
}

func randomImage(t testing.TB, layers int, layerSize int64, platform string, manifestType, configType, layerType types.MediaType) v1.Image {
	t.Helper()
	plat, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatalf("platform %q: %v", platform, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, manifestType), configType)
	for i := range layers {
		// Distinct sizes keep layers of one image distinct even if two random streams collided,
		// and make a mix-up between layers visible in a failure message.
		l, err := random.Layer(layerSize+int64(i), layerType)
		if err != nil {
			t.Fatalf("random layer: %v", err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: layerType,
			History:   v1.History{CreatedBy: fmt.Sprintf("oci-proxy test layer %d", i), Created: v1.Time{Time: time.Now().UTC()}},
		})
		if err != nil {
			t.Fatalf("append layer: %v", err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config file: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: time.Now().UTC()}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("set config: %v", err)
	}
	return img
}

// Push writes img to repo:tag on the registry and describes what was written.
func (r *Registry) Push(t testing.TB, repoTag string, img v1.Image) Image {
	t.Helper()
	ref := r.parse(t, repoTag)
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuth(r.auth())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	out := Describe(t, img)
	out.Ref = ref.String()
	return out
}

// PushIndex writes idx (and every image in it) to repo:tag on the registry.
func (r *Registry) PushIndex(t testing.TB, repoTag string, idx v1.ImageIndex) Image {
	t.Helper()
	ref := r.parse(t, repoTag)
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	if err := remote.WriteIndex(ref, idx, remote.WithContext(ctx), remote.WithAuth(r.auth())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	out := Image{Ref: ref.String(), Digest: d.String(), MediaType: mt}
	for _, desc := range im.Manifests {
		child, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatalf("index child %s: %v", desc.Digest, err)
		}
		c := Describe(t, child)
		c.Ref = ref.Context().Digest(desc.Digest.String()).String()
		out.Manifests = append(out.Manifests, c)
	}
	return out
}

// PushOCIImage pushes a random 3-layer linux/amd64 OCI image to repoTag.
func (r *Registry) PushOCIImage(t testing.TB, repoTag string) Image {
	t.Helper()
	return r.Push(t, repoTag, OCIImage(t, 3, 4096, "linux/amd64"))
}

// PushDockerImage pushes a random 2-layer linux/amd64 Docker schema 2 image to repoTag.
func (r *Registry) PushDockerImage(t testing.TB, repoTag string) Image {
	t.Helper()
	return r.Push(t, repoTag, DockerImage(t, 2, 4096, "linux/amd64"))
}

// PushOCIIndex pushes an OCI index of random 2-layer images for linux/amd64 and linux/arm64.
func (r *Registry) PushOCIIndex(t testing.TB, repoTag string) Image {
	t.Helper()
	return r.PushIndex(t, repoTag, OCIIndex(t, 2, 4096, "linux/amd64", "linux/arm64"))
}

func (r *Registry) parse(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure, name.StrictValidation)
	if err != nil {
		t.Fatalf("reference %q: %v", repoTag, err)
	}
	return ref
}

func (r *Registry) auth() authn.Authenticator {
	if r.Auth == nil {
		return authn.Anonymous
	}
	return r.Auth
}

// Describe returns img's digest, media type, platform, config and layer digests, as Push does
// for what it pushes.
func Describe(t testing.TB, img v1.Image) Image {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatal(err)
	}
	cfgName, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	plat := cf.OS + "/" + cf.Architecture
	if cf.Variant != "" {
		plat += "/" + cf.Variant
	}
	out := Image{Digest: d.String(), MediaType: mt, Platform: plat, Config: cfgName.String()}
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		ld, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out.Layers = append(out.Layers, ld.String())
	}
	return out
}

// repoOf returns the repository part of a reference ("host:port/a/b" of "host:port/a/b:tag" or
// "host:port/a/b@sha256:...").
func repoOf(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i]
	}
	return ref
}

// Tag gives the manifest (or index) that srcRepoRef names a further tag in the same repository:
// r.Tag(t, "acme/images/app:1.0", "1.1").
func (r *Registry) Tag(t testing.TB, srcRepoRef, tag string) {
	t.Helper()
	src := r.parse(t, srcRepoRef)
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	desc, err := remote.Get(src, remote.WithContext(ctx), remote.WithAuth(r.auth()))
	if err != nil {
		t.Fatalf("get %s: %v", src, err)
	}
	dst := src.Context().Tag(tag)
	if err := remote.Tag(dst, desc, remote.WithContext(ctx), remote.WithAuth(r.auth())); err != nil {
		t.Fatalf("tag %s: %v", dst, err)
	}
}
