package demand

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
)

// Sample is one element of a Prometheus instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// ParseVector reads a Prometheus query API answer ({"status":"success","data":{"resultType":
// "vector","result":[{"metric":{...},"value":[ts,"1.5"]}]}}). The answer is untrusted: an error
// status, another result type, a value that is not a finite count, or more than the limits allow
// is an error, never a panic. NaN and negative values (a counter reset seen by increase()) count
// as 0.
func ParseVector(r io.Reader) ([]Sample, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(body) > maxBody {
		return nil, fmt.Errorf("answer larger than %d bytes", maxBody)
	}
	var a struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  []json.RawMessage `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("not a Prometheus answer: %w", err)
	}
	if a.Status != "success" {
		return nil, fmt.Errorf("prometheus: %s: %s", trim(a.Status), trim(a.Error))
	}
	if a.Data.ResultType != "vector" {
		return nil, fmt.Errorf("%w: %q", errNotVector, trim(a.Data.ResultType))
	}
	if len(a.Data.Result) > maxEntries {
		return nil, fmt.Errorf("%d samples: more than %d", len(a.Data.Result), maxEntries)
	}
	out := make([]Sample, 0, len(a.Data.Result))
	for _, res := range a.Data.Result {
		if len(res.Value) != 2 {
			return nil, fmt.Errorf("a sample's value is not [time, \"number\"]")
		}
		var s string
		if err := json.Unmarshal(res.Value[1], &s); err != nil {
			return nil, fmt.Errorf("a sample's value is not a quoted number")
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(v, 0) {
			return nil, fmt.Errorf("sample value %q: not a count", trim(s))
		}
		if math.IsNaN(v) || v < 0 {
			v = 0
		}
		for k, lv := range res.Metric {
			if len(k) > maxName || len(lv) > maxName || !printable(k) || !printable(lv) {
				return nil, fmt.Errorf("label %q=%q: not a label the proxy exports", trim(k), trim(lv))
			}
		}
		out = append(out, Sample{Labels: res.Metric, Value: v})
	}
	return out, nil
}
