package loadtest

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ServerMetrics reads the node's /metrics (Prometheus text format) into a
// map from series (name with its labels, as written) to value.
func ServerMetrics(base string) (map[string]float64, error) {
	resp, err := http.Get(strings.TrimRight(base, "/") + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("loadtest: /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			out[f[0]] = v
		}
	}
	return out, sc.Err()
}

// serverMetric reads one series from /metrics.
func serverMetric(base, series string) (float64, error) {
	m, err := ServerMetrics(base)
	if err != nil {
		return 0, err
	}
	v, ok := m[series]
	if !ok {
		return 0, fmt.Errorf("loadtest: no %s in /metrics", series)
	}
	return v, nil
}

// ServerCPU reads the node's process CPU seconds from /metrics.
func ServerCPU(base string) (time.Duration, error) {
	v, err := serverMetric(base, "chorus_process_cpu_seconds_total")
	return time.Duration(v * float64(time.Second)), err
}

// ServerMemory reads the Go heap and stacks in use from the node's /metrics.
func ServerMemory(base string) (int64, error) {
	m, err := ServerMetrics(base)
	if err != nil {
		return 0, err
	}
	return int64(m["chorus_go_heap_inuse_bytes"] + m["chorus_go_stack_inuse_bytes"]), nil
}
