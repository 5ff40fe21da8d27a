package signaling

import (
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/chorus-voice/chorus/protocol"
)

// Metrics counts what the edge saw. Every rejected input is counted here.
type Metrics struct {
	Connections   atomic.Int64
	Deliveries    atomic.Uint64
	SlowConsumers atomic.Uint64
	Resumes       atomic.Uint64
	ResumeFailed  atomic.Uint64
	Identifies    atomic.Uint64
	// OpFailures counts client operations (presence, voice state, member
	// requests) the guild layer could not carry out.
	OpFailures   atomic.Uint64
	RESTRequests atomic.Uint64
	RESTErrors   atomic.Uint64
	RESTLimited  atomic.Uint64
	// ConnsRefused counts connections refused at accept because their
	// source IP held its limit already.
	ConnsRefused atomic.Uint64
	// Panics counts panics recovered on a connection's goroutines: each
	// ended that connection only, and logged its stack.
	Panics atomic.Uint64
	// Resubscribed counts session subscriptions moved to a guild's new
	// owner after a ring change.
	Resubscribed atomic.Uint64
	// TakenOver counts sessions this node took from another to resume
	// them here, HandedOff those it gave away, HandoffFailed the takes
	// that failed (their clients got op 9).
	TakenOver, HandedOff, HandoffFailed atomic.Uint64
	// The replication of sessions to the buddy (replicate.go): messages
	// and bytes streamed, rounds that could not be streamed or flushed,
	// full copies sent (ReplicaResyncs).
	ReplicaMessages, ReplicaBytes, ReplicaFailed, ReplicaResyncs atomic.Uint64
	// The copies kept of others (replica.go): gaps in a stream (each
	// answered with a full copy), malformed messages, sessions too large
	// to copy, sessions of gone nodes held, and handed over.
	ReplicaGaps, ReplicaMalformed, ReplicaDropped, ReplicaAdopted, ReplicaHandedOff atomic.Uint64
	// Gaps in the batches other nodes sent this one (batchgap.go):
	// repaired from the buddy, or answered by resetting every session
	// (SessionsReset counts those).
	BatchGapsRepaired, BatchGapsReset, SessionsReset atomic.Uint64
	closes                                           closeCounts
}

// closeCounts counts close codes: the websocket codes 1000–1015 and the
// gateways' own 4000–4031.
type closeCounts [48]atomic.Uint64

func closeSlot(code protocol.CloseCode) int {
	switch {
	case code >= 4000 && code < 4032:
		return int(code - 4000)
	case code >= 1000 && code < 1016:
		return int(32 + code - 1000)
	}
	return -1
}

func (cc *closeCounts) add(code protocol.CloseCode) {
	if i := closeSlot(code); i >= 0 {
		cc[i].Add(1)
	}
}

func (cc *closeCounts) get(code protocol.CloseCode) uint64 {
	if i := closeSlot(code); i >= 0 {
		return cc[i].Load()
	}
	return 0
}

// write writes the codes counted at least once as one series each of
// chorus_gateway_closes_total, the family both gateways share, labelled
// by gateway ("main" or "voice") and code.
func (cc *closeCounts) write(w io.Writer, gateway string) {
	for _, r := range [][2]protocol.CloseCode{{1000, 1016}, {4000, 4032}} {
		for code := r[0]; code < r[1]; code++ {
			if n := cc.get(code); n > 0 {
				fmt.Fprintf(w, "chorus_gateway_closes_total{gateway=%q,code=\"%d\"} %d\n", gateway, code, n)
			}
		}
	}
}

// Closes returns how many connections the server closed with code.
func (m *Metrics) Closes(code protocol.CloseCode) uint64 { return m.closes.get(code) }

// recovered counts and logs a panic that a connection's goroutine caught.
func (m *Metrics) recovered(log *slog.Logger, where string, r any) {
	m.Panics.Add(1)
	log.Error("recovered from a panic; the connection is closed", "in", where, "panic", fmt.Sprint(r),
		"stack", string(debug.Stack()))
}

// WriteMetrics writes the edge's counters and the process's in the
// Prometheus text format.
func (m *Metrics) WriteMetrics(w io.Writer) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Fprintf(w, "chorus_gateway_connections %d\n", m.Connections.Load())
	fmt.Fprintf(w, "chorus_gateway_deliveries_total %d\n", m.Deliveries.Load())
	fmt.Fprintf(w, "chorus_gateway_slow_consumers_total %d\n", m.SlowConsumers.Load())
	fmt.Fprintf(w, "chorus_gateway_identifies_total %d\n", m.Identifies.Load())
	fmt.Fprintf(w, "chorus_gateway_resubscriptions_total %d\n", m.Resubscribed.Load())
	fmt.Fprintf(w, "chorus_gateway_resumes_total %d\n", m.Resumes.Load())
	fmt.Fprintf(w, "chorus_gateway_resume_failures_total %d\n", m.ResumeFailed.Load())
	fmt.Fprintf(w, "chorus_gateway_sessions_taken_over_total %d\n", m.TakenOver.Load())
	fmt.Fprintf(w, "chorus_gateway_sessions_handed_off_total %d\n", m.HandedOff.Load())
	fmt.Fprintf(w, "chorus_gateway_handoffs_failed_total %d\n", m.HandoffFailed.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_messages_total %d\n", m.ReplicaMessages.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_bytes_total %d\n", m.ReplicaBytes.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_failed_total %d\n", m.ReplicaFailed.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_resyncs_total %d\n", m.ReplicaResyncs.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_gaps_total %d\n", m.ReplicaGaps.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_malformed_total %d\n", m.ReplicaMalformed.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_dropped_total %d\n", m.ReplicaDropped.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_adopted_total %d\n", m.ReplicaAdopted.Load())
	fmt.Fprintf(w, "chorus_gateway_replica_handed_off_total %d\n", m.ReplicaHandedOff.Load())
	fmt.Fprintf(w, "chorus_gateway_batch_gaps_total{outcome=\"repaired\"} %d\n", m.BatchGapsRepaired.Load())
	fmt.Fprintf(w, "chorus_gateway_batch_gaps_total{outcome=\"reset\"} %d\n", m.BatchGapsReset.Load())
	fmt.Fprintf(w, "chorus_gateway_sessions_reset_total %d\n", m.SessionsReset.Load())
	fmt.Fprintf(w, "chorus_gateway_op_failures_total %d\n", m.OpFailures.Load())
	m.closes.write(w, "main")
	fmt.Fprintf(w, "chorus_panics_recovered_total %d\n", m.Panics.Load())
	fmt.Fprintf(w, "chorus_connections_refused_per_ip_total %d\n", m.ConnsRefused.Load())
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
