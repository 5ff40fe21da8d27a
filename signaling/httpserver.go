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
	ReadHeader time.Duration // default 10 s
	Read       time.Duration // headers and body; default 30 s
	Write      time.Duration // default 30 s
	Idle       time.Duration // between keep-alive requests; default 60 s
}

func (t *HTTPTimeouts) setDefaults() {
	if t.ReadHeader == 0 {
		t.ReadHeader = 10 * time.Second
	}
	if t.Read == 0 {
		t.Read = 30 * time.Second
	}
	if t.Write == 0 {
		t.Write = 30 * time.Second
	}
	if t.Idle == 0 {
		t.Idle = 60 * time.Second
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
