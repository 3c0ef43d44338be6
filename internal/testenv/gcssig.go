package testenv

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// ServiceAccountEmail is the client_email of the key files ServiceAccountKey writes: V4 signed
// URLs name it in X-Goog-Credential.
const ServiceAccountEmail = "mirror-signer@oci-proxy-test.iam.gserviceaccount.com"

// ServiceAccountKey writes a service-account JSON key file with a fresh 2048-bit RSA key, with
// the fields the IAM console issues, and returns its path and the key. Nothing is registered
// anywhere: the file is good for signing URLs (VerifyGCSV4 checks them with key.PublicKey), not
// for fetching tokens.
func ServiceAccountKey(t testing.TB) (path string, key *rsa.PrivateKey) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]string{
		"type":                        "service_account",
		"project_id":                  "oci-proxy-test",
		"private_key_id":              "0123456789abcdef",
		"private_key":                 string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":                ServiceAccountEmail,
		"client_id":                   "1234567890",
		"auth_uri":                    "https://accounts.google.com/o/oauth2/auth",
		"token_uri":                   "https://oauth2.googleapis.com/token",
		"auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
		"universe_domain":             "googleapis.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(t.TempDir(), "service-account.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// VerifyGCSV4 checks a V4 signed Cloud Storage URL for method the way Cloud Storage does,
// following Google's "Canonical requests" and "Signatures" pages rather than the client's code:
// it rebuilds the canonical request from the URL alone, derives the string to sign, and checks
// the RSA-SHA256 signature with the service account's public key. It returns why the URL does
// not verify, or nil. fake-gcs-server checks none of this, so tests against it call this too.
func VerifyGCSV4(u *url.URL, method string, pub *rsa.PublicKey) error {
	q := u.Query()
	if got := q.Get("X-Goog-Algorithm"); got != "GOOG4-RSA-SHA256" {
		return fmt.Errorf("algorithm %q", got)
	}
	if got := q.Get("X-Goog-SignedHeaders"); got != "host" {
		return fmt.Errorf("signed headers %q, want only host (clients send no other)", got)
	}
	var params []string
	for k, vs := range q {
		if k == "X-Goog-Signature" {
			continue
		}
		for _, v := range vs {
			params = append(params, uriEscape(k, false)+"="+uriEscape(v, false))
		}
	}
	sort.Strings(params)
	creq := strings.Join([]string{
		method,
		uriEscape(u.Path, true),
		strings.Join(params, "&"),
		// The client signs the host without its port: URLs for Cloud Storage itself never have
		// one, an emulator's do.
		"host:" + u.Hostname(),
		"",
		"host",
		"UNSIGNED-PAYLOAD",
	}, "\n")
	email, scope, ok := strings.Cut(q.Get("X-Goog-Credential"), "/")
	if !ok || email == "" || strings.Count(scope, "/") != 3 || !strings.HasSuffix(scope, "/storage/goog4_request") {
		return fmt.Errorf("credential %q", q.Get("X-Goog-Credential"))
	}
	date := q.Get("X-Goog-Date")
	if !strings.HasPrefix(date, scope[:8]) {
		return fmt.Errorf("date %s outside the scope %s", date, scope)
	}
	sum := sha256.Sum256([]byte(creq))
	sts := "GOOG4-RSA-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
	if err != nil {
		return fmt.Errorf("signature is not hex: %w", err)
	}
	digest := sha256.Sum256([]byte(sts))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
}

// uriEscape is the percent-encoding of V4 signing: everything but the unreserved characters, and
// "/" kept in paths.
func uriEscape(s string, keepSlash bool) string {
	var sb strings.Builder
	for _, c := range []byte(s) {
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~", c) >= 0 || keepSlash && c == '/' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}
