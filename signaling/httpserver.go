package signaling

import (
	"crypto/tls"
	"log/slog"
	"net/http"
	"time"
)

// Timeouts of the HTTP listeners (REST, admin, gateway and voice upgrades).
// A client that opens a connection and then sends nothing, declares a body
// and never sends it, or never reads the answer is cut off by these rather
// than holding a goroutine and a file descriptor forever. An upgraded
// websocket clears them: from then on its own heartbeat and write
// deadlines apply (net/http clears its deadlines when a connection is
// hijacked; TestIdleConnectionsAreCut guards that).
type HTTPTimeouts struct {
	ReadHeader time.Duration // default DefaultHTTPReadHeader
	Read       time.Duration // headers and body; default DefaultHTTPRead
	Write      time.Duration // default DefaultHTTPWrite
	Idle       time.Duration // between keep-alive requests; default DefaultHTTPIdle
}

func (t *HTTPTimeouts) setDefaults() {
	if t.ReadHeader == 0 {
		t.ReadHeader = DefaultHTTPReadHeader
	}
	if t.Read == 0 {
		t.Read = DefaultHTTPRead
	}
	if t.Write == 0 {
		t.Write = DefaultHTTPWrite
	}
	if t.Idle == 0 {
		t.Idle = DefaultHTTPIdle
	}
}

const (
	maxHeaderBytes = 64 << 10
	// connRefuseWrite bounds the 429 written to a refused connection.
	connRefuseWrite = controlWriteTimeout
)

// NewHTTPServer returns an http.Server for h with the timeouts t (zero
// fields take their defaults).
func NewHTTPServer(h http.Handler, tc *tls.Config, log *slog.Logger, t HTTPTimeouts) *http.Server {
	t.setDefaults()
	return &http.Server{Handler: h, TLSConfig: tc, ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read,
		WriteTimeout: t.Write, IdleTimeout: t.Idle, MaxHeaderBytes: maxHeaderBytes,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}
