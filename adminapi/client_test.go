package adminapi

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenOr(t *testing.T) {
	dir := t.TempDir()
	if tok, err := TokenOr("given", dir); err != nil || tok != "given" {
		t.Fatalf("given: %q %v", tok, err)
	}
	if _, err := TokenOr("", dir); err == nil || !strings.Contains(err.Error(), "admin.token") {
		t.Fatalf("missing file: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "admin.token"), []byte("secret\n"), 0o600)
	if tok, err := TokenOr("", dir); err != nil || tok != "secret" {
		t.Fatalf("from file: %q %v", tok, err)
	}
}

func TestDo(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer secret" {
			http.Error(w, `{"message":"401: Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		w.Write([]byte(`{"id":"7"}`))
	}))
	defer srv.Close()
	var out struct{ ID string }
	if err := New(srv.URL+"/", "secret").Do("POST", "/admin/v1/users", map[string]string{"username": "x"}, &out); err != nil || out.ID != "7" {
		t.Fatalf("good token: %+v %v", out, err)
	}
	err := New(srv.URL, "wrong").Do("GET", "/admin/v1/users", nil, &out)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
}
