package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Result is what a scenario measured. It is written as JSON and printed
// as a summary table.
type Result struct {
	Scenario string             `json:"scenario"`
	Started  time.Time          `json:"started"`
	Seconds  float64            `json:"seconds"`
	Params   map[string]any     `json:"params"`
	Counters map[string]float64 `json:"counters"`
	Latency  map[string]Summary `json:"latency_ms"`
	Failures map[string]int     `json:"failures"`
	SLOs     []SLOResult        `json:"slos,omitempty"`
	// Timeline is the main latency per second of the run.
	TimelineOf string      `json:"timeline_of,omitempty"`
	Timeline   []TimePoint `json:"timeline,omitempty"`
	// Marks are moments on the timeline worth a line of their own, such as
	// a fault and the recovery from it.
	Marks []Mark `json:"marks,omitempty"`
	// Histograms carry a worker's raw latency histograms to the process
	// that merges several workers' results (MergeGateway).
	Histograms map[string]*Timed `json:"histograms,omitempty"`
}

// Mark is a labelled moment, in seconds on the timeline's axis.
type Mark struct {
	Second float64 `json:"second"`
	Label  string  `json:"label"`
}

func newResult(scenario string, params map[string]any) *Result {
	return &Result{Scenario: scenario, Started: time.Now().UTC(), Params: params, Counters: map[string]float64{},
		Latency: map[string]Summary{}, Failures: map[string]int{}}
}

// WriteJSON writes the result to path.
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// WriteSummary prints the result as a table.
func (r *Result) WriteSummary(w io.Writer) {
	fmt.Fprintf(w, "\nscenario %s, %.1f s\n", r.Scenario, r.Seconds)
	keys := make([]string, 0, len(r.Counters))
	for k := range r.Counters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %-32s %14.2f\n", k, r.Counters[k])
	}
	if len(r.Latency) > 0 {
		fmt.Fprintf(w, "  %-20s %9s %9s %9s %9s %9s %9s %9s\n", "latency (ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "max")
		names := make([]string, 0, len(r.Latency))
		for k := range r.Latency {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			s := r.Latency[k]
			fmt.Fprintf(w, "  %-20s %9d %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f\n", k, s.Count, s.Mean, s.P50, s.P90, s.P99, s.P999, s.Max)
		}
	}
	for k, n := range r.Failures {
		fmt.Fprintf(w, "  failure %-24s %6d\n", k, n)
	}
	for _, s := range r.SLOs {
		verdict := "met"
		if !s.Met {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "  slo %-28s %s (measured %g)\n", s.Spec, verdict, s.Measured)
	}
}

// SLO is a bound on one measured value, written like "delivery.p99<=250ms",
// "lost<=0" or "connected>=1000". Latency values are
// <latency-name>.<p50|p90|p99|p99.9|max|mean>; durations take a unit.
type SLO struct {
	Spec   string
	Metric string
	Max    bool // true for <=, false for >=
	Value  float64
}

// SLOResult is one SLO checked against a result.
type SLOResult struct {
	Spec     string  `json:"spec"`
	Measured float64 `json:"measured"`
	Met      bool    `json:"met"`
}

// ParseSLO parses one --slo flag value.
func ParseSLO(s string) (SLO, error) {
	op, max := "<=", true
	i := strings.Index(s, op)
	if i < 0 {
		op, max = ">=", false
		i = strings.Index(s, op)
	}
	if i <= 0 {
		return SLO{}, fmt.Errorf("slo %q: want metric<=value or metric>=value", s)
	}
	metric, raw := strings.TrimSpace(s[:i]), strings.TrimSpace(s[i+len(op):])
	v, err := strconv.ParseFloat(raw, 64)
	if err != nil {
		d, derr := time.ParseDuration(raw)
		if derr != nil {
			return SLO{}, fmt.Errorf("slo %q: %q is neither a number nor a duration", s, raw)
		}
		v = ms(d)
	}
	return SLO{Spec: s, Metric: metric, Max: max, Value: v}, nil
}

// Check evaluates slos against r and records the verdicts; it reports
// whether all were met. An SLO on a value the scenario did not measure is
// missed.
func (r *Result) Check(slos []SLO) bool {
	all := true
	for _, s := range slos {
		v, ok := r.value(s.Metric)
		met := ok && ((s.Max && v <= s.Value) || (!s.Max && v >= s.Value))
		r.SLOs = append(r.SLOs, SLOResult{Spec: s.Spec, Measured: v, Met: met})
		all = all && met
	}
	return all
}

func (r *Result) value(metric string) (float64, bool) {
	if v, ok := r.Counters[metric]; ok {
		return v, true
	}
	i := strings.LastIndexByte(metric, '.')
	if strings.HasSuffix(metric, ".p99.9") {
		i = len(metric) - len(".p99.9")
	}
	if i < 0 {
		return 0, false
	}
	s, ok := r.Latency[metric[:i]]
	if !ok {
		return 0, false
	}
	switch metric[i+1:] {
	case "p50":
		return s.P50, true
	case "p90":
		return s.P90, true
	case "p99":
		return s.P99, true
	case "p99.9":
		return s.P999, true
	case "max":
		return s.Max, true
	case "mean":
		return s.Mean, true
	}
	return 0, false
}
