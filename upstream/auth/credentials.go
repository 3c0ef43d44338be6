package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
)

// Credentials say what oci-proxy presents for a registry host: to the token endpoint (realm) the
// registry names when it asks for a Bearer token, or to the registry itself when it asks for
// Basic authentication. Transport calls Basic for every request it authenticates, so an
// implementation must answer quickly; a nil Credentials means Anonymous.
type Credentials interface {
	// Basic returns the username and password for host, the registry's host[:port] as request
	// URLs have it, lowercased (e.g. "ghcr.io", "registry-1.docker.io"). ok false with a nil
	// error means there are none for host, and requests go anonymously. An error means
	// credentials exist but could not be read (a credential helper failed): the request fails
	// rather than going out anonymously, which would hide the cause behind a 401.
	Basic(ctx context.Context, host string) (username, password string, ok bool, err error)
}

// Anonymous presents no credentials: token endpoints hand out anonymous tokens, which is enough
// for public images.
type Anonymous struct{}

// Basic reports that there are no credentials.
func (Anonymous) Basic(context.Context, string) (string, string, bool, error) {
	return "", "", false, nil
}

func (Anonymous) String() string { return "anonymous" }

// Static returns credentials presenting username and password to every host. They are meant for
// a Transport that talks to one registry: use DockerConfig when hosts need different ones.
func Static(username, password string) Credentials {
	return &static{username: username, password: newSecret(password)}
}

type static struct {
	username string
	password secret
}

func (s *static) Basic(context.Context, string) (string, string, bool, error) {
	return s.username, s.password.reveal(), true, nil
}

func (s *static) String() string   { return "static credentials for user " + strconv.Quote(s.username) }
func (s *static) GoString() string { return s.String() }

// Format prints String for every verb, %d and %x included, which would otherwise print the
// fields.
func (s *static) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.String()) }

func (s *static) LogValue() slog.Value {
	return slog.GroupValue(slog.String("username", s.username), slog.String("password", redacted))
}

// maxPasswordFile bounds a password file: a password or a personal access token is well under
// 1 KiB, and a file much larger is the wrong file.
const maxPasswordFile = 4 << 10

// FromFiles returns Static credentials with the password read from passwordFile (a mounted
// secret, say). One trailing newline (LF or CRLF) is removed; an empty password, a file of more
// than one line or larger than 4 KiB, an empty username or one containing ':' (which Basic
// authentication cannot carry) are refused. Errors name the file, never its content.
func FromFiles(username, passwordFile string) (Credentials, error) {
	if username == "" {
		return nil, errors.New("credentials: username is empty")
	}
	if strings.Contains(username, ":") {
		return nil, errors.New("credentials: username contains ':'")
	}
	f, err := os.Open(passwordFile)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPasswordFile+1))
	if err != nil {
		return nil, fmt.Errorf("credentials: read %s: %w", passwordFile, err)
	}
	if len(b) > maxPasswordFile {
		return nil, fmt.Errorf("credentials: password file %s is larger than %d bytes", passwordFile, maxPasswordFile)
	}
	password := string(b)
	password = strings.TrimSuffix(password, "\n")
	password = strings.TrimSuffix(password, "\r")
	if password == "" {
		return nil, fmt.Errorf("credentials: password file %s is empty", passwordFile)
	}
	if strings.ContainsAny(password, "\r\n") {
		return nil, fmt.Errorf("credentials: password file %s has more than one line", passwordFile)
	}
	return Static(username, password), nil
}
