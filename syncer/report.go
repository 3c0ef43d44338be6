package syncer

import (
	"fmt"
	"io"
	"time"

	"github.com/happy-turtle/oci-proxy/oci"
)

// Report is what one run did. It marshals to JSON as `oci-proxy sync --json` prints it; it holds
// no credentials, signed URLs or blob contents.
type Report struct {
	DryRun  bool      `json:"dry_run"`
	Start   time.Time `json:"start"`
	Seconds float64   `json:"seconds"`
	// Manifests is how many distinct manifests and indexes were read; Blobs how many distinct
	// blobs they name that were checked on every target.
	Manifests int            `json:"manifests"`
	Blobs     int            `json:"blobs"`
	Targets   []TargetReport `json:"targets"`
	// Skipped are repositories, tags, manifests and blobs left out on purpose, with why.
	Skipped []Skip `json:"skipped,omitempty"`
	// Errors are what could not be read from the upstream (a tag list, a manifest): the blobs
	// behind them were not checked anywhere.
	Errors []Problem `json:"errors,omitempty"`
	// NotStarted counts the blobs whose copy had not started when the run was told to stop
	// (WithStop); the next run copies them.
	NotStarted int `json:"not_started,omitempty"`
}

// TargetReport is one mirror's part of a run.
type TargetReport struct {
	Name string `json:"name"`
	// Skipped says why the mirror was not written to at all ("not writable (http mirror)",
	// "disabled"); its counts are then zero.
	Skipped string `json:"skipped,omitempty"`
	Present int    `json:"present"` // blobs it already held
	// Copied and CopiedBytes count the blobs written; in a dry run, those that would be.
	Copied      int   `json:"copied"`
	CopiedBytes int64 `json:"copied_bytes"`
	// ResumedBytes are the bytes of copied blobs that were not sent again because an earlier,
	// interrupted upload had stored them.
	ResumedBytes int64 `json:"resumed_bytes,omitempty"`
	// Seconds is how long the mirror was being written to: from the start of its first copy
	// to the end of its last (copies overlap, so this is not their sum).
	Seconds float64   `json:"seconds"`
	Failed  []Problem `json:"failed,omitempty"`
}

// Skip is something left out on purpose.
type Skip struct {
	Repository string `json:"repository,omitempty"` // as clients name it
	Ref        string `json:"ref,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Reason     string `json:"reason"`
}

// Problem is something that failed, with a short reason.
type Problem struct {
	Repository string `json:"repository,omitempty"`
	Ref        string `json:"ref,omitempty"`
	Digest     string `json:"digest,omitempty"`
	Reason     string `json:"reason"`
}

// Failures counts the upstream errors and the blobs that failed on some target: zero means the
// run did everything it was asked to.
func (r Report) Failures() int {
	// A blob left for later by a stop is work not done: not a success.
	n := len(r.Errors) + r.NotStarted
	for _, t := range r.Targets {
		n += len(t.Failed)
	}
	return n
}

func (r Report) copied() int {
	n := 0
	for _, t := range r.Targets {
		n += t.Copied
	}
	return n
}

// WriteText prints the report for people: a summary line, a line per mirror, then every
// failure and skip.
func (r Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	mode, verb := "sync", "copied"
	if r.DryRun {
		mode, verb = "sync (dry run)", "to copy"
	}
	ew.printf("%s: %d manifests, %d blobs, %d failures in %.1fs\n", mode, r.Manifests, r.Blobs, r.Failures(), r.Seconds)
	if r.NotStarted > 0 {
		ew.printf("  stopped: %d blobs not started (the next run copies them)\n", r.NotStarted)
	}
	for _, t := range r.Targets {
		if t.Skipped != "" {
			ew.printf("  mirror %s: skipped: %s\n", t.Name, t.Skipped)
			continue
		}
		ew.printf("  mirror %s: %d present, %d %s (%s%s), %d failed\n", t.Name, t.Present, t.Copied, verb, bytesText(t.CopiedBytes), t.rate(r.DryRun), len(t.Failed))
		for _, f := range t.Failed {
			ew.printf("    failed %s: %s\n", f.Digest, f.Reason)
		}
	}
	for _, e := range r.Errors {
		ew.printf("  error %s: %s\n", where(e.Repository, e.Ref, e.Digest), e.Reason)
	}
	for _, s := range r.Skipped {
		ew.printf("  skipped %s: %s\n", where(s.Repository, s.Ref, s.Digest), s.Reason)
	}
	return ew.err
}

// rate says how long the copies to t took and how fast they went, for the text report.
func (t TargetReport) rate(dryRun bool) string {
	if dryRun || t.Copied == 0 {
		return ""
	}
	s := fmt.Sprintf(" in %.1fs", t.Seconds)
	if t.Seconds > 0 {
		s += ", " + bytesText(int64(float64(t.CopiedBytes-t.ResumedBytes)/t.Seconds)) + "/s"
	}
	if t.ResumedBytes > 0 {
		s += ", " + bytesText(t.ResumedBytes) + " resumed"
	}
	return s
}

func where(repo, ref, digest string) string {
	s := repo
	switch {
	case digest != "":
		s += "@" + digest
	case oci.LooksLikeDigest(ref):
		s += "@" + ref
	case ref != "":
		s += ":" + ref
	}
	if s == "" {
		return "-"
	}
	return s
}

func bytesText(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
