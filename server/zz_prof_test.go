package server_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/chorus-voice/chorus/signaling"
)

func TestZZProfile(t *testing.T) {
	if os.Getenv("PROF") == "" {
		t.Skip("manual profiling aid")
	}
	runtime.MemProfileRate = 1
	f := start(t, func(c *signaling.Config) { c.IdentifiesPer5s = 1 << 30; c.HeartbeatInterval = 10 * time.Minute })
	var conns []*websocket.Conn
	for i := 0; i < 2000; i++ {
		ws, _, err := websocket.DefaultDialer.Dial("ws://"+f.node.HTTPAddr+"/?v=10", nil)
		if err != nil {
			t.Fatal(err)
		}
		ws.ReadMessage()
		ws.WriteMessage(1, []byte(identifyJSON(f.demo.BotToken, 513)))
		for {
			_, m, _ := ws.ReadMessage()
			if strings.Contains(string(m), "GUILD_CREATE") {
				ws.WriteMessage(1, []byte(`{"op":1,"d":2}`))
				ws.ReadMessage()
				break
			}
		}
		conns = append(conns, ws)
	}
	runtime.GC()
	fh, _ := os.Create("/tmp/heap.prof")
	pprof.WriteHeapProfile(fh)
	fh.Close()
	fmt.Println(len(conns))
}
