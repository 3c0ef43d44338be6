package oci

import (
	"errors"
	"fmt"
)

// MaxNameLength bounds a repository name. The distribution spec suggests clients keep the whole
// reference under 255 characters; registries such as distribution enforce that on the name.
const MaxNameLength = 255

// ErrName is wrapped by every repository name error.
var ErrName = errors.New("invalid repository name")

// ErrTag is wrapped by every tag error.
var ErrTag = errors.New("invalid tag")

// ValidateName checks a repository name against the distribution spec's grammar:
//
//	[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
//
// It is hand-written rather than a regexp because it runs on every request and the grammar is small:
// components of lowercase alphanumerics joined by '.', '_', '__' or any run of '-', separated by '/'.
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty", ErrName)
	}
	if len(name) > MaxNameLength {
		return fmt.Errorf("%w: longer than %d characters", ErrName, MaxNameLength)
	}
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '/' {
			if err := validComponent(name[start:i]); err != nil {
				return err
			}
			start = i + 1
		}
	}
	return nil
}

func validComponent(c string) error {
	if c == "" {
		return fmt.Errorf("%w: empty path component", ErrName)
	}
	if !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return fmt.Errorf("%w: a path component must start and end with a lowercase letter or digit", ErrName)
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		switch {
		case isAlnum(ch):
		case ch == '-':
			// any run of dashes is a separator
		case ch == '.':
			if !isAlnum(c[i+1]) {
				return fmt.Errorf("%w: %q must be followed by a letter or digit", ErrName, ".")
			}
		case ch == '_':
			// '_' or '__', then an alphanumeric
			if c[i+1] == '_' {
				i++
			}
			if !isAlnum(c[i+1]) {
				return fmt.Errorf("%w: at most two underscores in a row, followed by a letter or digit", ErrName)
			}
		default:
			return fmt.Errorf("%w: character %q is not allowed", ErrName, ch)
		}
		if ch == '-' && i+1 < len(c) && !isAlnum(c[i+1]) && c[i+1] != '-' {
			return fmt.Errorf("%w: '-' must be followed by a letter, digit or '-'", ErrName)
		}
	}
	return nil
}

// ValidateTag checks a tag against [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if tag == "" {
		return fmt.Errorf("%w: empty", ErrTag)
	}
	if len(tag) > 128 {
		return fmt.Errorf("%w: longer than 128 characters", ErrTag)
	}
	for i := 0; i < len(tag); i++ {
		ch := tag[i]
		if isAlnum(ch) || 'A' <= ch && ch <= 'Z' || ch == '_' {
			continue
		}
		if i > 0 && (ch == '.' || ch == '-') {
			continue
		}
		return fmt.Errorf("%w: character %q is not allowed here", ErrTag, ch)
	}
	return nil
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }
