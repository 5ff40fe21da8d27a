package server_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/klauspost/compress/zstd"

	"github.com/chorus-voice/chorus/server"
	"github.com/chorus-voice/chorus/signaling"
)

// fixture is a real node on loopback with the demo data.
type fixture struct {
	t    *testing.T
	node *server.Node
	demo server.Demo
	base string // http://host:port
}

func start(t *testing.T, tweak func(*signaling.Config)) *fixture {
	t.Helper()
	cfg := testConfig(t)
	if tweak != nil {
		tweak(&cfg.Gateway)
	}
	return startConfig(t, cfg)
}

// startConfig starts a node with cfg, stopped when the test ends, and
// seeds the demo guild.
func startConfig(t *testing.T, cfg server.Config) *fixture {
	t.Helper()
	n, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	d, err := n.SeedDemo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, node: n, demo: d, base: "http://" + n.HTTPAddr}
}

type frame struct {
	Op int             `json:"op"`
	S  *int64          `json:"s"`
	T  *string         `json:"t"`
	D  json.RawMessage `json:"d"`
}

func (f frame) name() string {
	if f.T == nil {
		return ""
	}
	return *f.T
}

// client is a minimal gateway client for tests: it reads in the
// background, decompressing as told, and hands frames out in order.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan frame
	closed chan error
	lastS  int64
}

func (f *fixture) dial(query string) *client {
	f.t.Helper()
	url := "ws://" + f.node.HTTPAddr + "/?" + query
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	c := &client{t: f.t, ws: ws, frames: make(chan frame, 4096), closed: make(chan error, 1)}
	compress := ""
	if i := strings.Index(query, "compress="); i >= 0 {
		compress = strings.SplitN(query[i+len("compress="):], "&", 2)[0]
	}
	go c.read(compress)
	f.t.Cleanup(func() { ws.Close() })
	return c
}

// feed is an io.Reader over websocket messages, for streaming decompressors.
type feed struct {
	ws  *websocket.Conn
	buf []byte
}

func (r *feed) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		_, b, err := r.ws.ReadMessage()
		if err != nil {
			return 0, err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (c *client) read(compress string) {
	var dec *json.Decoder
	switch compress {
	case "zlib-stream":
		zr, err := zlib.NewReader(&feed{ws: c.ws})
		if err != nil {
			c.closed <- err
			return
		}
		dec = json.NewDecoder(zr)
	case "zstd-stream":
		zr, err := zstd.NewReader(&feed{ws: c.ws}, zstd.WithDecoderConcurrency(1))
		if err != nil {
			c.closed <- err
			return
		}
		dec = json.NewDecoder(zr)
	}
	for {
		var fr frame
		if dec != nil {
			if err := dec.Decode(&fr); err != nil {
				c.closed <- unwrapClose(err)
				return
			}
		} else {
			_, b, err := c.ws.ReadMessage()
			if err != nil {
				c.closed <- err
				return
			}
			if err := json.Unmarshal(b, &fr); err != nil {
				c.closed <- fmt.Errorf("bad frame %q: %w", b, err)
				return
			}
		}
		c.frames <- fr
	}
}

func unwrapClose(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if ce, ok := e.(*websocket.CloseError); ok {
			return ce
		}
	}
	return err
}

func (c *client) send(v any) {
	c.t.Helper()
	var b []byte
	switch x := v.(type) {
	case string:
		b = []byte(x)
	case []byte:
		b = x
	default:
		b, _ = json.Marshal(v)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// next returns the next frame, failing the test after timeout.
func (c *client) next(timeout time.Duration) frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		if f.S != nil {
			c.lastS = *f.S
		}
		return f
	case err := <-c.closed:
		// The reader queues every frame before it reports the end, but
		// select picks at random among ready cases: frames come first.
		select {
		case f := <-c.frames:
			c.closed <- err // for expectClose
			if f.S != nil {
				c.lastS = *f.S
			}
			return f
		default:
		}
		c.t.Fatalf("connection ended while waiting for a frame: %v", err)
	case <-time.After(timeout):
		c.t.Fatal("timed out waiting for a frame")
	}
	return frame{}
}

// waitFor skips frames until a dispatch named name arrives.
func (c *client) waitFor(name string) frame {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f := c.next(time.Until(deadline))
		if f.name() == name {
			return f
		}
	}
	c.t.Fatalf("no %s", name)
	return frame{}
}

// expectClose waits for the server to close with code.
func (c *client) expectClose(code int) {
	c.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-c.frames:
		case err := <-c.closed:
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != code {
				c.t.Fatalf("closed with %v, want code %d", err, code)
			}
			return
		case <-deadline:
			c.t.Fatalf("not closed; want code %d", code)
		}
	}
}

func identify(token string, intents int) map[string]any {
	return map[string]any{"op": 2, "d": map[string]any{"token": token, "intents": intents,
		"properties": map[string]string{"os": "linux", "browser": "test", "device": "test"}}}
}

// ready identifies and returns the READY data.
func (c *client) ready(token string, intents int) map[string]any {
	c.t.Helper()
	if f := c.next(5 * time.Second); f.Op != 10 {
		c.t.Fatalf("first frame op %d, want Hello", f.Op)
	}
	c.send(identify(token, intents))
	f := c.waitFor("READY")
	var d map[string]any
	json.Unmarshal(f.D, &d)
	return d
}

const allIntents = 53608447

// rest performs an authenticated REST call and decodes the answer.
func (f *fixture) rest(method, path, token string, body any, out any) *http.Response {
	f.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.base+path, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bot "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			f.t.Fatalf("%s %s: %s: %v", method, path, b, err)
		}
	}
	return resp
}

// createBot makes a bot through the admin API, with or without privileged
// intents, and returns its token.
func (f *fixture) createBot(t *testing.T, name string, privileged bool) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	req, _ := http.NewRequest("POST", f.base+"/admin/v1/users",
		strings.NewReader(fmt.Sprintf(`{"username":%q,"bot":true,"privileged_intents":%v}`, name, privileged)))
	req.Header.Set("Authorization", "Bearer "+f.node.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create bot: %v %v", resp, err)
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&out)
	return out.Token
}
