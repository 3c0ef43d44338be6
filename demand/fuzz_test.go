package demand

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzParseSnapshot: a /_/demand answer from anywhere either parses into Data that passes its
// own checks again after a round trip, or is refused with an error; never a panic.
func FuzzParseSnapshot(f *testing.F) {
	f.Add([]byte(`{"half_life_seconds":3600,"misses":[{"mirror":"asia","repository":"app","digest":"sha256:aa","count":3}],"served":[{"continent":"AS","mirror":"eu","requests":2}],"distance":[{"continent":"AS","bounds":[50,100],"buckets":[1,2],"count":2}]}`))
	f.Add([]byte(`{"misses":[{"mirror":"","repository":"app","count":1}]}`))
	f.Add([]byte(`{"served":[{"continent":"XX","mirror":"eu","requests":1}]}`))
	f.Add([]byte(`{"distance":[{"continent":"EU","bounds":[100,50],"buckets":[1,2],"count":2}]}`))
	f.Add([]byte(`{"misses":[{"mirror":"a","repository":"b","count":-1}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := ParseSnapshot(bytes.NewReader(body))
		if err != nil {
			return
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := ParseSnapshot(bytes.NewReader(again)); err != nil {
			t.Fatalf("a parsed answer does not parse again: %v\n%s", err, again)
		}
		m := Merge(d, d)
		if len(m.Misses) > len(d.Misses) || len(m.Served) > len(d.Served) {
			t.Fatalf("merge grew the entries: %+v", m)
		}
	})
}

// FuzzParseVector: a Prometheus answer either parses into finite, non-negative samples with
// printable labels, or is refused; never a panic.
func FuzzParseVector(f *testing.F) {
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"mirror":"a","repository":"b"},"value":[1.5,"3"]}]}}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}`))
	f.Add([]byte(`{"status":"error","error":"x"}`))
	f.Add([]byte(`{"status":"success","data":{"resultType":"vector","result":[{"metric":{"le":"+Inf"},"value":[1]}]}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ss, err := ParseVector(bytes.NewReader(body))
		if err != nil {
			return
		}
		for _, s := range ss {
			if !finite(s.Value) {
				t.Fatalf("sample value %v", s.Value)
			}
			for k, v := range s.Labels {
				if !printable(k) || !printable(v) {
					t.Fatalf("label %q=%q", k, v)
				}
			}
		}
		if _, err := histograms(ss); err == nil {
			return
		}
	})
}
