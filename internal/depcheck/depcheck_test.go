// Package depcheck holds a test, in the style of go-containerregistry's depcheck, that pins which
// packages each package of the module may import. The rules are the two lists in docs/DESIGN.md
// ("Packages and their direction"), so that the document and the code cannot drift apart.
package depcheck

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/happy-turtle/oci-proxy"

type pkg struct {
	ImportPath string
	Imports    []string
}

// packages lists the module's packages with their non-test imports.
func packages(t *testing.T) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Imports", module+"/...")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// rules reads the two fenced lists of docs/DESIGN.md's package section: "pkg -> a, b" lines
// (project imports) and "module  pkg, pkg" lines (where a third-party module may be imported).
func rules(t *testing.T) (allowed map[string][]string, modules map[string][]string) {
	t.Helper()
	f, err := os.Open("../../docs/DESIGN.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	allowed, modules = map[string][]string{}, map[string][]string{}
	sc := bufio.NewScanner(f)
	section, block := false, 0
	inFence := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = line == "## Packages and their direction"
			continue
		case !section:
			continue
		case strings.HasPrefix(line, "```"):
			if inFence {
				block++
			}
			inFence = !inFence
			continue
		case !inFence || strings.TrimSpace(line) == "":
			continue
		}
		switch block {
		case 0:
			from, to, ok := strings.Cut(line, "->")
			if !ok {
				t.Fatalf("docs/DESIGN.md: %q is not \"package -> imports\"", line)
			}
			allowed[strings.TrimSpace(from)] = split(to)
		case 1:
			fields := strings.Fields(line)
			modules[fields[0]] = split(strings.Join(fields[1:], " "))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(allowed) == 0 || len(modules) == 0 {
		t.Fatal("docs/DESIGN.md has no package lists under \"## Packages and their direction\"")
	}
	return allowed, modules
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func TestImportDirection(t *testing.T) {
	allowed, modules := rules(t)
	seen := map[string]bool{}
	for _, p := range packages(t) {
		name := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		seen[name] = true
		may, ok := allowed[name]
		if !ok {
			t.Errorf("package %s has no line in docs/DESIGN.md's package list", name)
			continue
		}
		for _, imp := range p.Imports {
			if rest, ours := strings.CutPrefix(imp, module+"/"); ours {
				if !slices.Contains(may, "*") && !slices.Contains(may, rest) {
					t.Errorf("%s imports %s; docs/DESIGN.md allows only %v", name, rest, may)
				}
				continue
			}
			for mod, users := range modules {
				if (imp == mod || strings.HasPrefix(imp, mod+"/")) && !slices.Contains(users, name) {
					t.Errorf("%s imports %s; docs/DESIGN.md allows %s only in %v", name, imp, mod, users)
				}
			}
		}
	}
	for name := range allowed {
		if !seen[name] {
			t.Errorf("docs/DESIGN.md lists package %s, which does not exist", name)
		}
	}
}

// The rules must be able to fail: a made-up import breaks them.
func TestRulesCatchAnArrow(t *testing.T) {
	allowed, modules := rules(t)
	for _, tc := range []struct{ pkg, imp string }{
		{"config", "geo"},
		{"mirrors", "config"},
		{"redirector", "mirrors"},
		{"cmd/oci-proxy", "config"},
	} {
		if slices.Contains(allowed[tc.pkg], tc.imp) {
			t.Errorf("the rules let %s import %s", tc.pkg, tc.imp)
		}
	}
	if users := modules["github.com/aws/aws-sdk-go-v2"]; slices.Contains(users, "mirrors") || slices.Contains(users, "redirector") {
		t.Errorf("the rules let the request path link the AWS SDK: %v", users)
	}
}

// buildTags are the tags every script that builds the service passes to go build.
const buildTags = "disable_grpc_modules"

// The service's builds leave out the gRPC DirectPath dependencies of cloud.google.com/go/storage
// (xDS, Envoy's protobufs): the JSON API the service uses never reaches them, and their package
// initialisation alone keeps about 8 MB of the executable resident. The test fails when a script stops
// passing the tag or a new dependency brings them back under it.
func TestBuildLeavesOutGRPCDirectPath(t *testing.T) {
	for _, script := range []string{"scripts/build.sh", "scripts/release.sh", "scripts/bench.sh"} {
		b, err := os.ReadFile("../../" + script)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "go build") && !strings.Contains(line, "-tags "+buildTags) &&
				!strings.Contains(line, "benchsrv") && !strings.HasPrefix(strings.TrimSpace(line), "#") {
				t.Errorf("%s:%d: go build without -tags %s", script, i+1, buildTags)
			}
		}
	}
	cmd := exec.Command("go", "list", "-tags", buildTags, "-deps", module+"/cmd/oci-proxy")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/envoyproxy/") || strings.HasPrefix(p, "google.golang.org/grpc/xds") {
			t.Errorf("cmd/oci-proxy built with -tags %s still depends on %s", buildTags, p)
		}
	}
}
