// Package adminapi is a client of a node's admin API (/admin/v1): what
// `chorus admin` and the load tester use to create users, guilds, channels,
// roles and memberships on a running node. It speaks HTTP only, so the load
// tester stays a client over the wire.
package adminapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Client calls one node's admin API with its admin token.
type Client struct {
	Base  string // the node's HTTP base, e.g. http://127.0.0.1:8080
	Token string
	HTTP  *http.Client
}

// New returns a client of the node at base.
func New(base, token string) *Client {
	return &Client{Base: strings.TrimRight(base, "/"), Token: token, HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// ReadToken reads the admin token a node keeps in its data directory.
func ReadToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "admin.token")
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("no --admin-token, and cannot read %s: %w", path, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// TokenOr returns given, or else the token in dataDir.
func TokenOr(given, dataDir string) (string, error) {
	if given != "" {
		return given, nil
	}
	return ReadToken(dataDir)
}

// Do sends body (JSON, if not nil) and decodes the answer into out (if not
// nil). An answer of 300 or more is an error carrying the node's message.
func (c *Client) Do(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("is the node running? %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}
