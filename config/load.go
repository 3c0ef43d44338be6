package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	c := &Config{}
	var root yaml.Node
	if len(bytes.TrimSpace(data)) > 0 {
		if err := yaml.Unmarshal(data, &root); err != nil {
			return nil, yamlError(file, err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
			return nil, yamlError(file, err)
		}
		// A second document would be silently ignored by the decoder; refuse it instead.
		var extra yaml.Node
		if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: only one YAML document is allowed", file)
		}
	}
	c.File = file
	if ov.Upstream != "" {
		c.Upstream = ov.Upstream
	}
	if ov.Listen != "" {
		c.Listen = ov.Listen
	}
	v := &validator{file: file, root: docRoot(&root)}
	c.applyDefaults()
	c.validate(v)
	if err := errors.Join(v.errs...); err != nil {
		return nil, err
	}
	return c, nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)
var unknownField = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)

// yamlError rewrites the decoder's "line N: ..." messages as "file:N: ...", one per problem.
func yamlError(file string, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	errs := make([]error, 0, len(msgs))
	for _, m := range msgs {
		// A message quotes the offending value, which may span lines; one problem, one line.
		m = strings.ReplaceAll(m, "\n", `\n`)
		if g := yamlLine.FindStringSubmatch(m); g != nil {
			msg := g[2]
			if u := unknownField.FindStringSubmatch(msg); u != nil {
				msg = fmt.Sprintf("unknown key %q in %s", u[1], sectionName(u[2]))
			}
			errs = append(errs, fmt.Errorf("%s:%s: %s", file, g[1], msg))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: %s", file, m))
	}
	return errors.Join(errs...)
}

func sectionName(typ string) string {
	switch typ {
	case "Config":
		return "the top level"
	case "Mirror":
		return "a mirror"
	case "SyncRepository":
		return "a sync repository"
	}
	return strings.ToLower(typ)
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
