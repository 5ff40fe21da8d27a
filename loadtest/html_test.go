package loadtest

import (
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// artifactDir is where the report and its screenshot are kept for people
// to look at: $CHORUS_ARTIFACTS, or ../artifacts.
func artifactDir(t *testing.T) string {
	dir := os.Getenv("CHORUS_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// The HTML report of a real chat run renders in headless Chromium: the
// page has its two charts, and the screenshot shows their series.
func TestHTMLReportRendersInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is not installed: the README's test command installs Debian's chromium")
	}
	n := startNode(t)
	tok, _ := os.ReadFile(filepath.Join(n.data, "admin.token"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := RunChat(ctx, ChatOptions{URL: n.base, AdminToken: strings.TrimSpace(string(tok)), Sessions: 30, Guilds: 4,
		HugeShare: 0.5, Rate: 30, Duration: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	r.Check([]SLO{mustSLO(t, "lost<=0"), mustSLO(t, "delivery.p50<=0ms")})
	dir := artifactDir(t)
	page := filepath.Join(dir, "loadtest-chat-report.html")
	if err := r.WriteHTMLFile(page); err != nil {
		t.Fatal(err)
	}
	html, _ := os.ReadFile(page)
	if c := strings.Count(string(html), `<svg class="chart"`); c != 2 {
		t.Fatalf("%d charts in the report", c)
	}
	if !strings.Contains(string(html), "MISSED") || strings.Contains(string(html), "<script") || strings.Contains(string(html), "http://") && strings.Contains(string(html), "cdn") {
		t.Fatal("report must show the missed SLO and load nothing from outside")
	}
	shot := filepath.Join(dir, "loadtest-chat-report.png")
	os.Remove(shot)
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--user-data-dir="+t.TempDir(),
		"--window-size=1000,1600", "--screenshot="+shot, "file://"+page)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// The first series is drawn in #2563eb: count pixels of that colour.
	blue := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			if r>>8 < 0x40 && g>>8 > 0x50 && g>>8 < 0x70 && bl>>8 > 0xd0 {
				blue++
			}
		}
	}
	if blue < 200 {
		t.Fatalf("the screenshot shows %d pixels of the chart colour: charts did not render", blue)
	}
	t.Logf("report %s, screenshot %s (%d chart pixels)", page, shot, blue)
}
