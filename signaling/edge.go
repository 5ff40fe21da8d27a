package signaling

import (
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Handler returns the HTTP handler of the node's client-facing edge: the
// gateway websocket at "/", the REST and admin APIs, ops (/metrics,
// /healthz) and site, the web client (package web), at "/" and under
// "/web/" (nil: a line naming the node). A handler's panic is counted and
// logged, and answered 500.
func Handler(gw *Gateway, api *API, ops *Ops, site http.Handler) http.Handler {
	mux := http.NewServeMux()
	if site != nil {
		mux.Handle("GET /{$}", site)
		mux.Handle("GET /web/", site)
	} else {
		mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Chorus node %s. Gateway: %s  REST: /api/v10\n", gw.cfg.NodeID, gw.cfg.GatewayURL)
		})
	}
	mux.Handle("GET /metrics", ops)
	mux.Handle("GET /healthz", ops)
	api.register(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http would recover a handler's panic too, but silently for
		// our counters: count it, log it, answer 500.
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				gw.metrics.recovered(gw.cfg.Logger, r.Method+" "+r.URL.Path, p)
				writeJSON(w, http.StatusInternalServerError, apiError{Message: "500: Internal Server Error", Code: 0})
			}
		}()
		// The gateway lives at "/". Some libraries append "/" to the URL
		// they were given (clients.md §2); "//" would make the mux redirect,
		// which no websocket client follows, so any all-slash path with an
		// upgrade goes to the gateway directly.
		if strings.Trim(r.URL.Path, "/") == "" && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			gw.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// MetricsWriter writes series in the Prometheus text format. The edge's
// Metrics, the session hub, the guild router and the voice side (voice
// gateway, SFU node, media socket) each write their own.
type MetricsWriter interface {
	WriteMetrics(w io.Writer)
}

// Ops serves /metrics, every source's series in turn, and /healthz.
type Ops struct {
	sources []MetricsWriter
}

// NewOps returns the ops handler for the given metric sources.
func NewOps(sources ...MetricsWriter) *Ops { return &Ops{sources: sources} }

func (o *Ops) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		w.Write([]byte("ok\n"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	for _, s := range o.sources {
		s.WriteMetrics(w)
	}
}
