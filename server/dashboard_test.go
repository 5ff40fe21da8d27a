package server_test

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// docs/grafana-dashboard.json reads only metrics that exist: every metric
// name in its queries is served by a live node's /metrics (with voice on,
// and after one close on each gateway so that the labelled close series
// exist).
func TestDashboardMetricsExist(t *testing.T) {
	f, pool := voiceFixture(t)
	c := f.dial("v=10")
	c.send("{")
	c.expectClose(4002)
	ws := dialVoice(t, pool, f.node.VoiceAddr, "?v=8")
	readOp(t, ws, 8)
	ws.WriteMessage(websocket.TextMessage, []byte("{"))
	if code := closeCode(t, ws); code != 4002 {
		t.Fatalf("voice closed with %d", code)
	}

	resp, err := http.Get(f.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	served := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, _, _ := strings.Cut(strings.Fields(sc.Text() + " ")[0], "{")
		served[name] = true
	}

	raw, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	metric := regexp.MustCompile(`chorus_[a-z_]+`)
	used := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metric.FindAllString(tg.Expr, -1) {
				used++
				if !served[name] {
					t.Errorf("panel %q reads %s, which /metrics does not serve", p.Title, name)
				}
			}
		}
	}
	if used < 20 {
		t.Fatalf("only %d metric references found in the dashboard", used)
	}
}
