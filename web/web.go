// Package web serves the browser client: chat and voice over the node's
// own Gateway, REST and voice gateway. Its sources are in web/src; `npm
// run build` bundles them into web/dist, which is committed and embedded
// here, so `go build` alone gives a binary that serves it (and
// TestDistIsCurrent fails when dist no longer matches src).
package web

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
)

//go:embed dist
var dist embed.FS

// DemoUser is a user the sign-in page offers a one-click sign-in for
// (chorus serve --demo).
type DemoUser struct {
	Username string `json:"username"`
	Token    string `json:"token"`
}

// Handler serves the client's page at "/" and its assets under "/web/".
// demo, when not nil, lists the demo users: GET /web/demo hands out their
// tokens to anyone who asks, which is what a demo is for (never on a node
// people really use; docs/security.md).
func Handler(demo func() []DemoUser) http.Handler {
	files, _ := fs.Sub(dist, "dist") // a constant path: cannot fail
	asset := func(name, ctype string) http.HandlerFunc {
		body, err := fs.ReadFile(files, name)
		if err != nil {
			panic("web: " + name + " missing from dist: run npm run build in web/")
		}
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", ctype)
			// The page names its assets without a version: always revalidate.
			h.Set("Cache-Control", "no-cache")
			secure(h)
			w.Write(body)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", asset("index.html", "text/html; charset=utf-8"))
	mux.Handle("GET /web/app.js", asset("app.js", "text/javascript; charset=utf-8"))
	mux.Handle("GET /web/app.css", asset("app.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /web/demo", func(w http.ResponseWriter, r *http.Request) {
		var users []DemoUser
		if demo != nil {
			users = demo()
		}
		if len(users) == 0 {
			http.Error(w, "this node runs no demo (chorus serve --demo)", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(map[string][]DemoUser{"users": users})
	})
	return mux
}

// secure sets the headers that keep the page to its own origin: scripts
// and styles only from the node, connections to the node and to voice
// servers (wss: another node of the cluster), no framing.
func secure(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; img-src 'self' data:; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
