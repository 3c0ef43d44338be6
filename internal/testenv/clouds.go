package testenv

import (
	"path/filepath"
	"testing"
)

// IsolateAWS hides the machine's AWS environment and files from the SDK's default chain (CI
// machines set AWS_CA_BUNDLE, for one), so that a test, and a service it starts with its
// environment, sees only the credentials it sets up; and keeps the chain from probing the
// instance metadata service.
func IsolateAWS(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
		"AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
		"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL",
		"AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE"} {
		t.Setenv(k, "")
	}
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// IsolateGCS keeps the machine's Google credentials and any emulator setting away from the
// Cloud Storage client, so that a test, and a service it starts with its environment, sees only
// what it sets up.
func IsolateGCS(t testing.TB) {
	t.Helper()
	t.Setenv("STORAGE_EMULATOR_HOST", "")
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", filepath.Join(t.TempDir(), "none.json"))
	t.Setenv("CLOUDSDK_CONFIG", t.TempDir())
	// Keeps the metadata-server probe from waiting on a network that is not Google Cloud.
	t.Setenv("GCE_METADATA_HOST", "127.0.0.1:1")
}
