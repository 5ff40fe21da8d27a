package signaling

import (
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Metrics counts what the edge saw. Every rejected input is counted here.
type Metrics struct {
	Connections   atomic.Int64
	Deliveries    atomic.Uint64
	SlowConsumers atomic.Uint64
	Resumes       atomic.Uint64
	ResumeFailed  atomic.Uint64
	Identifies    atomic.Uint64
	RESTRequests  atomic.Uint64
	RESTErrors    atomic.Uint64
	RESTLimited   atomic.Uint64
	closes        [32]atomic.Uint64 // gateway close codes 4000..4031, by code-4000
}

func (m *Metrics) countClose(code int) {
	if code >= 4000 && code < 4032 {
		m.closes[code-4000].Add(1)
	}
}

// Closes returns how many connections the server closed with code.
func (m *Metrics) Closes(code int) uint64 {
	if code >= 4000 && code < 4032 {
		return m.closes[code-4000].Load()
	}
	return 0
}

// WriteText writes the metrics in the Prometheus text format.
func (m *Metrics) WriteText(w io.Writer, sessions int) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(w, "chorus_gateway_connections %d\n", m.Connections.Load())
	fmt.Fprintf(w, "chorus_gateway_sessions %d\n", sessions)
	fmt.Fprintf(w, "chorus_gateway_deliveries_total %d\n", m.Deliveries.Load())
	fmt.Fprintf(w, "chorus_gateway_slow_consumers_total %d\n", m.SlowConsumers.Load())
	fmt.Fprintf(w, "chorus_gateway_identifies_total %d\n", m.Identifies.Load())
	fmt.Fprintf(w, "chorus_gateway_resumes_total %d\n", m.Resumes.Load())
	fmt.Fprintf(w, "chorus_gateway_resume_failures_total %d\n", m.ResumeFailed.Load())
	for i := range m.closes {
		if n := m.closes[i].Load(); n > 0 {
			fmt.Fprintf(w, "chorus_gateway_closes_total{code=\"%d\"} %d\n", 4000+i, n)
		}
	}
	fmt.Fprintf(w, "chorus_rest_requests_total %d\n", m.RESTRequests.Load())
	fmt.Fprintf(w, "chorus_rest_errors_total %d\n", m.RESTErrors.Load())
	fmt.Fprintf(w, "chorus_rest_rate_limited_total %d\n", m.RESTLimited.Load())
	fmt.Fprintf(w, "chorus_go_heap_inuse_bytes %d\n", ms.HeapInuse)
	fmt.Fprintf(w, "chorus_go_stack_inuse_bytes %d\n", ms.StackInuse)
	fmt.Fprintf(w, "chorus_go_sys_bytes %d\n", ms.Sys)
	fmt.Fprintf(w, "chorus_go_goroutines %d\n", runtime.NumGoroutine())
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		fmt.Fprintf(w, "chorus_process_cpu_seconds_total %.6f\n", cpu.Seconds())
	}
}
