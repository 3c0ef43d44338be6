package mirrors

import (
	"net/url"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{
			name: "s3 presigned",
			in:   "https://b.s3.us-east-1.amazonaws.com/blobs/sha256/ab?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=tok%2Fen&X-Amz-SignedHeaders=host&X-Amz-Signature=deadbeef",
			want: "https://b.s3.us-east-1.amazonaws.com/blobs/sha256/ab?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20250101T000000Z&X-Amz-Expires=900&X-Amz-Security-Token=REDACTED&X-Amz-SignedHeaders=host&X-Amz-Signature=REDACTED",
		},
		{
			name: "gcs v4",
			in:   "https://storage.googleapis.com/b/k?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam.gserviceaccount.com%2F20250101%2Fauto%2Fstorage%2Fgoog4_request&X-Goog-Date=20250101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=0a1b",
			want: "https://storage.googleapis.com/b/k?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=REDACTED&X-Goog-Date=20250101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=REDACTED",
		},
		{
			name: "lower case and encoded names",
			in:   "http://h/k?x-amz-signature=aa&X%2DGoog%2DSignature=bb&signature=cc",
			want: "http://h/k?x-amz-signature=REDACTED&X%2DGoog%2DSignature=REDACTED&signature=REDACTED",
		},
		{
			name: "userinfo password",
			in:   "https://user:secret@h/k?a=1",
			want: "https://user:xxxxx@h/k?a=1",
		},
		{name: "no query", in: "https://h/b/k", want: "https://h/b/k"},
		{name: "parameter without value kept", in: "https://h/k?X-Amz-Signature&a=1", want: "https://h/k?X-Amz-Signature&a=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := url.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := Redact(u)
			if got != tt.want {
				t.Errorf("Redact(%s)\n got %s\nwant %s", tt.in, got, tt.want)
			}
			for _, secret := range []string{"deadbeef", "AKIAEXAMPLE", "tok", "0a1b", "secret"} {
				if strings.Contains(got, secret) {
					t.Errorf("Redact kept %q: %s", secret, got)
				}
			}
			if orig, _ := url.Parse(tt.in); u.String() != orig.String() {
				t.Errorf("Redact modified its argument: %s", u)
			}
		})
	}
	if got := Redact(nil); got != "" {
		t.Errorf("Redact(nil) = %q", got)
	}
}
