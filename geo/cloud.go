package geo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// maxRangesBytes bounds a ranges file. AWS's ip-ranges.json is about 2 MiB and Google's cloud.json
// far less; anything this big is not one of them.
const maxRangesBytes = 64 << 20

// ParseAWSRanges reads AWS's ip-ranges.json
// (https://docs.aws.amazon.com/vpc/latest/userguide/aws-ip-ranges.html) into rules tagged
// "aws:<region>". Prefixes whose region is GLOBAL are left out: they say nothing about where a
// client is. AWS lists a prefix once per service; the duplicates are dropped.
func ParseAWSRanges(r io.Reader) ([]NetworkRule, error) {
	var doc struct {
		Prefixes []struct {
			IPPrefix string `json:"ip_prefix"`
			Region   string `json:"region"`
		} `json:"prefixes"`
		IPv6Prefixes []struct {
			IPv6Prefix string `json:"ipv6_prefix"`
			Region     string `json:"region"`
		} `json:"ipv6_prefixes"`
	}
	if err := decodeRanges(r, "AWS ip-ranges.json", &doc); err != nil {
		return nil, err
	}
	if len(doc.Prefixes)+len(doc.IPv6Prefixes) == 0 {
		return nil, errors.New("AWS ip-ranges.json: no prefixes or ipv6_prefixes")
	}
	var b rulesBuilder
	for i, p := range doc.Prefixes {
		where := fmt.Sprintf("AWS ip-ranges.json: prefixes[%d]", i)
		if err := b.add(where, "ip_prefix", p.IPPrefix, false, "aws", p.Region); err != nil {
			return nil, err
		}
	}
	for i, p := range doc.IPv6Prefixes {
		where := fmt.Sprintf("AWS ip-ranges.json: ipv6_prefixes[%d]", i)
		if err := b.add(where, "ipv6_prefix", p.IPv6Prefix, true, "aws", p.Region); err != nil {
			return nil, err
		}
	}
	return b.rules, nil
}

// ParseGCPRanges reads Google Cloud's cloud.json (https://www.gstatic.com/ipranges/cloud.json) into
// rules tagged "gcp:<scope>", scope being a region such as "us-east1".
func ParseGCPRanges(r io.Reader) ([]NetworkRule, error) {
	var doc struct {
		Prefixes []struct {
			IPv4Prefix string `json:"ipv4Prefix"`
			IPv6Prefix string `json:"ipv6Prefix"`
			Scope      string `json:"scope"`
		} `json:"prefixes"`
	}
	if err := decodeRanges(r, "GCP cloud.json", &doc); err != nil {
		return nil, err
	}
	if len(doc.Prefixes) == 0 {
		return nil, errors.New("GCP cloud.json: no prefixes")
	}
	var b rulesBuilder
	for i, p := range doc.Prefixes {
		where := fmt.Sprintf("GCP cloud.json: prefixes[%d]", i)
		var err error
		switch {
		case p.IPv4Prefix != "" && p.IPv6Prefix != "":
			err = fmt.Errorf("%s: both ipv4Prefix and ipv6Prefix", where)
		case p.IPv4Prefix != "":
			err = b.add(where, "ipv4Prefix", p.IPv4Prefix, false, "gcp", p.Scope)
		case p.IPv6Prefix != "":
			err = b.add(where, "ipv6Prefix", p.IPv6Prefix, true, "gcp", p.Scope)
		default:
			err = fmt.Errorf("%s: neither ipv4Prefix nor ipv6Prefix", where)
		}
		if err != nil {
			return nil, err
		}
	}
	return b.rules, nil
}

func decodeRanges(r io.Reader, what string, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, maxRangesBytes+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	if len(data) > maxRangesBytes {
		return fmt.Errorf("%s: larger than %d MiB", what, maxRangesBytes>>20)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

type rulesBuilder struct {
	rules []NetworkRule
	seen  map[NetworkRule]struct{}
}

func (b *rulesBuilder) add(where, field, prefix string, v6 bool, cloud, region string) error {
	if prefix == "" {
		return fmt.Errorf("%s: %s is missing", where, field)
	}
	p, err := netip.ParsePrefix(prefix)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", where, field, err)
	}
	if p.Addr().Is6() != v6 {
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		return fmt.Errorf("%s: %s %q is not an %s prefix", where, field, prefix, family)
	}
	if region == "" {
		return fmt.Errorf("%s: %s %s has no region", where, field, prefix)
	}
	if strings.EqualFold(region, "global") {
		return nil
	}
	if !validRegion(region) {
		return fmt.Errorf("%s: region %q: want letters, digits and '-'", where, region)
	}
	rule := NetworkRule{Prefix: p.Masked(), Tag: cloud + ":" + region}
	if _, dup := b.seen[rule]; dup {
		return nil
	}
	if b.seen == nil {
		b.seen = map[NetworkRule]struct{}{}
	}
	b.seen[rule] = struct{}{}
	b.rules = append(b.rules, rule)
	return nil
}

// validRegion keeps tags to the characters region names use, so a tag is safe to log and to write
// in a config file.
func validRegion(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
