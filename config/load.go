package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds config.yaml; a larger file is certainly a mistake.
const MaxFileSize = 4 << 20

// Overrides are settings from the environment and the command line, applied before validation.
// Empty fields override nothing.
type Overrides struct {
	Upstream string // the UpstreamRegistry variable of the original tool
	Listen   string // --listen, or ":"+$PORT
}

// Load reads and validates a configuration file. Every problem is reported at once, each as
// "file:line: message".
func Load(path string, ov Overrides) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, MaxFileSize)
	}
	c, err := Parse(path, data, ov)
	if err != nil {
		return nil, err
	}
	c.resolvePaths(filepath.Dir(path))
	return c, nil
}

// resolvePaths makes the file names in the configuration relative to the directory of the file
// that names them, so that a config works whatever directory the service starts in.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.GeoIP.Database)
	abs(&c.GeoIP.ASNDatabase)
	for i := range c.CloudRanges {
		abs(&c.CloudRanges[i].File)
	}
	for i := range c.Mirrors {
		abs(&c.Mirrors[i].CredentialsFile)
	}
	for i := range c.Routes {
		abs(&c.Routes[i].Auth.PasswordFile)
		abs(&c.Routes[i].Auth.DockerConfig)
	}
	abs(&c.Sync.Webhook.TokenFile)
}

// EnvFile is Config.File for a configuration built from the environment alone.
const EnvFile = "(environment)"

// FromEnv returns the configuration used when there is no file: the upstream alone.
func FromEnv(ov Overrides) (*Config, error) {
	return Parse(EnvFile, nil, ov)
}

// Parse decodes and validates data as read from file (used in messages).
func Parse(file string, data []byte, ov Overrides) (*Config, error) {
	raw := &rawConfig{}
	var doc yaml.Node
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
			return nil, syntaxError(file, err)
		}
		// A second document would be silently ignored; refuse it instead.
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: only one YAML document is allowed", file)
		}
	}
	root := docRoot(&doc)
	d := &decoder{file: file}
	if root.Kind != 0 {
		d.decode(root, reflect.ValueOf(raw).Elem(), "", "the top level", false, 0)
	}
	if ov.Upstream != "" {
		raw.Upstream = ov.Upstream
	}
	if ov.Listen != "" {
		raw.Listen = ov.Listen
	}
	v := &validator{file: file, root: root}
	c := resolve(raw, file, v)
	if err := errors.Join(append(d.errs, v.errs...)...); err != nil {
		return nil, err
	}
	return c, nil
}

// yamlLine is how yaml.v3 starts a syntax error's message; the line is all this package takes
// from it, the rest of the message is kept as it is.
var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxError rewrites the parser's "yaml: line N: ..." as "file:N: ...", on one line.
func syntaxError(file string, err error) error {
	m := strings.ReplaceAll(strings.TrimPrefix(err.Error(), "yaml: "), "\n", `\n`)
	if g := yamlLine.FindStringSubmatch(m); g != nil {
		return fmt.Errorf("%s:%s: %s", file, g[1], g[2])
	}
	return fmt.Errorf("%s: %s", file, m)
}

func docRoot(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return n.Content[0]
	}
	return n
}

// validator collects problems with their lines.
type validator struct {
	file string
	root *yaml.Node
	errs []error
}

// at reports a problem at the node found by path (mapping keys as strings, sequence indexes as
// ints); the nearest existing ancestor's line is used when the key is absent.
func (v *validator) at(path []any, format string, args ...any) {
	line := lineOf(v.root, path)
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		v.errs = append(v.errs, fmt.Errorf("%s:%d: %s", v.file, line, msg))
	} else {
		v.errs = append(v.errs, fmt.Errorf("%s: %s", v.file, msg))
	}
}

func lineOf(n *yaml.Node, path []any) int {
	line := 0
	if n != nil && n.Line > 0 {
		line = n.Line
	}
	for _, p := range path {
		if n == nil {
			break
		}
		var next *yaml.Node
		switch k := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						if next.Kind == yaml.MappingNode || next.Kind == yaml.SequenceNode {
							line = n.Content[i].Line
						} else {
							line = next.Line
						}
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
				line = next.Line
			}
		}
		n = next
	}
	return line
}

// p builds a path for validator.at.
func p(parts ...any) []any { return parts }
