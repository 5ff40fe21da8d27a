package web

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// sourceDigest is build.mjs's sourceDigest: build.mjs, package-lock.json
// and every file of src/ by name, each as name, NUL, content, NUL.
func sourceDigest(t *testing.T) string {
	t.Helper()
	src, err := os.ReadDir("src")
	if err != nil {
		t.Fatal(err)
	}
	files := []string{"build.mjs", "package-lock.json"}
	var names []string
	for _, e := range src {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		files = append(files, "src/"+n)
	}
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(filepath.FromSlash(f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(f + "\x00"))
		h.Write(b)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// The committed build must be the build of the committed sources: the
// binary embeds dist, so a change to src that was not built would ship
// the old client.
func TestDistIsCurrent(t *testing.T) {
	built, err := dist.ReadFile("dist/source.sha256")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.TrimSpace(string(built)), sourceDigest(t); got != want {
		t.Fatalf("web/dist was built from other sources (%s, sources are %s): run `npm ci && npm run build` in web/ and commit dist", got, want)
	}
}

func TestHandler(t *testing.T) {
	demo := []DemoUser{{Username: "alice", Token: "a.b.c"}}
	for _, tc := range []struct {
		name, path string
		demo       func() []DemoUser
		status     int
		ctype      string
		contains   string
	}{
		{"page", "/", nil, 200, "text/html", `<script type="module" src="/web/app.js">`},
		{"script", "/web/app.js", nil, 200, "text/javascript", "rtc_connection_id"},
		{"style", "/web/app.css", nil, 200, "text/css", "#composer"},
		{"no demo", "/web/demo", nil, 404, "text/plain", "--demo"},
		{"empty demo", "/web/demo", func() []DemoUser { return nil }, 404, "text/plain", "--demo"},
		{"demo", "/web/demo", func() []DemoUser { return demo }, 200, "application/json", `"token":"a.b.c"`},
		{"unknown asset", "/web/nope.js", nil, 404, "text/plain", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			Handler(tc.demo).ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.status || !strings.HasPrefix(rec.Header().Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.contains) {
				t.Fatalf("GET %s: %d %q, body %.200q", tc.path, rec.Code, rec.Header().Get("Content-Type"), body)
			}
			if tc.status == 200 && tc.ctype != "application/json" && !strings.Contains(rec.Header().Get("Content-Security-Policy"), "script-src 'self'") {
				t.Fatalf("GET %s: no content security policy", tc.path)
			}
		})
	}
	rec := httptest.NewRecorder()
	Handler(func() []DemoUser { return demo }).ServeHTTP(rec, httptest.NewRequest("GET", "/web/demo", nil))
	var got struct{ Users []DemoUser }
	if err := json.NewDecoder(rec.Body).Decode(&got); err != nil || len(got.Users) != 1 || got.Users[0] != demo[0] {
		t.Fatalf("demo users: %+v, %v", got, err)
	}
	rec = httptest.NewRecorder()
	Handler(nil).ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /: %d", rec.Code)
	}
}
