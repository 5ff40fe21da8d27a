package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/server"
	"github.com/chorus-voice/chorus/signaling"
)

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: chorus serve [flags]

Runs a Chorus node. With no flags it listens on loopback only, keeps its data
under ./data (embedded store, embedded NATS, development CA) and needs nothing
else installed. Every flag can also be set as an environment variable
CHORUS_<FLAG> (for example CHORUS_HTTP=0.0.0.0:8080) or as a key of the JSON
file given with --config.

Flags:
`)
		fs.PrintDefaults()
	}
	cfgPath := fs.String("config", "", "JSON config file whose keys are these flag names")
	dataDir := fs.String("data", "data", "data directory")
	httpAddr := fs.String("http", "127.0.0.1:8080", "address for ws:// and http:// (gateway, REST, admin API)")
	httpsAddr := fs.String("https", "127.0.0.1:8443", `address for wss:// and https://, or "off"`)
	voiceAddr := fs.String("voice", "127.0.0.1:8444", `voice gateway (wss://) address; the media UDP socket uses the same port, or "off"`)
	voiceUDP := fs.String("voice-udp", "", "voice media UDP address (default: the --voice address)")
	webrtcUDP := fs.String("webrtc-udp", "", `the one UDP port of every WebRTC (browser) voice participant (default: the media UDP host and the next port; "off" refuses WebRTC)`)
	voiceModes := fs.String("voice-modes", "", "comma-separated voice encryption modes to offer, in order (default: all, aead_aes256_gcm_rtpsize first)")
	tlsCert := fs.String("tls-cert", "", "TLS certificate file (default: a development CA under <data>/tls)")
	tlsKey := fs.String("tls-key", "", "TLS key file")
	gatewayURL := fs.String("gateway-url", "", "gateway URL announced to clients (default ws://<http>)")
	nodeID := fs.String("node-id", "node-1", "this node's name in the cluster")
	postgres := fs.String("postgres", "", "PostgreSQL URL (postgres://user@host/db) for users, guilds and messages (default: the embedded store under --data)")
	nats := fs.String("nats", "", "comma-separated NATS URLs of an external cluster, which makes this node one of a cluster; needs --postgres (default: embedded NATS, a one-node cluster)")
	roles := fs.String("roles", "gateway,guild,voice", "what this node serves, comma-separated: gateway (client connections and REST), guild (guilds placed on it by the ring), voice (voice gateway and media)")
	advertise := fs.String("advertise", "", "host name or IP address clients and other nodes reach this node at; replaces the listeners' host in the gateway URL, voice endpoint, voice media address and the node's cluster record (default: the listeners' addresses)")
	clusterHeartbeat := fs.Duration("cluster-heartbeat", cluster.DefaultHeartbeatEvery, "how often the node renews its cluster membership")
	clusterTTL := fs.Duration("cluster-ttl", cluster.DefaultTTL, "how long a membership lives without renewal (whole seconds): a dead node leaves the ring this long after its last heartbeat")
	clusterFence := fs.Duration("cluster-fence-after", cluster.DefaultFenceAfter, "how long without an acknowledged renewal before the node stops serving its guilds (must be shorter than --cluster-ttl)")
	demo := fs.Bool("demo", false, "create (once) a demo guild, a bot and two users, and print their tokens")
	heartbeat := fs.Duration("heartbeat-interval", signaling.DefaultHeartbeatInterval, "gateway heartbeat interval sent in Hello")
	maxConc := fs.Int("max-concurrency", signaling.DefaultIdentifiesPer5s, "identifies allowed per user per 5 s (max_concurrency of GET /gateway/bot)")
	restRate := fs.Int("rest-rate", signaling.DefaultRESTRequestsPerSecond, "REST requests per second per user, route and channel or guild")
	copies := fs.Bool("session-copies", true, "in a cluster (--nats), keep an exact copy of another gateway node's sessions, so that its clients resume here with nothing lost if it dies; costs about twice the bytes between gateway nodes and NATS (every gateway node of a cluster must set it alike)")
	resumeWindow := fs.Duration("resume-window", signaling.DefaultResumeWindow, "how long a dropped gateway session can be resumed (on any node of a cluster) before it ends and leaves its guilds")
	drainWait := fs.Duration("drain-wait", signaling.DefaultDrainWait, "on SIGTERM or admin drain, how long to wait for other nodes to take over this node's gateway sessions before handing its guilds over")
	identifyTimeout := fs.Duration("identify-timeout", signaling.DefaultIdentifyTimeout, "how long a new gateway or voice connection may go without Identify or Resume before it is closed with 4003")
	perIP := fs.Int("max-conns-per-ip", signaling.DefaultMaxConnsPerIP, "connections one source IP may hold open on each listener; 0 for no limit (a load tester on this machine needs more)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := applyConfig(fs, *cfgPath); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	// Whatever the node creates (store files, TLS keys, NATS state) is for
	// its own user only; server.Start also tightens what was there before.
	syscall.Umask(0o077)
	cfg := server.Config{DataDir: *dataDir, HTTPAddr: *httpAddr, HTTPSAddr: *httpsAddr, TLSCert: *tlsCert,
		TLSKey: *tlsKey, GatewayURL: *gatewayURL, NodeID: *nodeID, NATS: *nats, Postgres: *postgres, Logger: logger,
		VoiceAddr: *voiceAddr, VoiceUDP: *voiceUDP, WebRTCUDP: *webrtcUDP, MaxConnsPerIP: *perIP}
	if *perIP == 0 {
		cfg.MaxConnsPerIP = -1
	}
	r, err := ring.ParseRoles(*roles)
	if err != nil {
		return fmt.Errorf("--roles: %w", err)
	}
	cfg.Roles = r
	cfg.Advertise = *advertise
	cfg.HeartbeatEvery, cfg.HeartbeatTTL, cfg.FenceAfter = *clusterHeartbeat, *clusterTTL, *clusterFence
	if *clusterHeartbeat <= 0 || *clusterFence <= *clusterHeartbeat || *clusterTTL <= *clusterFence || *clusterTTL%time.Second != 0 {
		return fmt.Errorf("cluster timing: need 0 < --cluster-heartbeat (%v) < --cluster-fence-after (%v) < --cluster-ttl (%v), the TTL in whole seconds", *clusterHeartbeat, *clusterFence, *clusterTTL)
	}
	if *voiceModes != "" {
		for _, name := range strings.Split(*voiceModes, ",") {
			m, err := crypto.ParseMode(strings.TrimSpace(name))
			if err != nil {
				return fmt.Errorf("--voice-modes: %q is not a voice encryption mode", name)
			}
			cfg.VoiceModes = append(cfg.VoiceModes, m)
		}
	}
	cfg.Gateway.HeartbeatInterval = *heartbeat
	cfg.Gateway.IdentifiesPer5s = *maxConc
	cfg.Gateway.RESTRequestsPerSecond = *restRate
	cfg.Gateway.IdentifyTimeout = *identifyTimeout
	cfg.Gateway.DrainWait = *drainWait
	cfg.Gateway.ResumeWindow = *resumeWindow
	cfg.Gateway.SessionCopies = *copies && *nats != "" // alone, nobody could take a copy
	if *maxConc < 1 || *restRate < 1 || *heartbeat < time.Second || *perIP < 0 || *identifyTimeout < 100*time.Millisecond || *drainWait <= 0 || *resumeWindow < time.Second {
		return fmt.Errorf("--max-concurrency and --rest-rate must be at least 1, --heartbeat-interval at least 1s, --max-conns-per-ip at least 0, --identify-timeout at least 100ms, --drain-wait above 0, --resume-window at least 1s")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(*dataDir)
	fmt.Printf("Chorus %s node %s is up.\n", version, *nodeID)
	fmt.Printf("  gateway + REST   http://%s   (gateway %s, REST http://%s/api/v10)\n", n.HTTPAddr, gatewayOr(cfg.GatewayURL, n.HTTPAddr), n.HTTPAddr)
	if n.HTTPSAddr != "" {
		fmt.Printf("  TLS              https://%s   (wss://%s)\n", n.HTTPSAddr, n.HTTPSAddr)
	}
	if n.CAPath != "" {
		fmt.Printf("  development CA   %s\n", n.CAPath)
		fmt.Printf("                   trust it with SSL_CERT_FILE=%s (Go) or NODE_EXTRA_CA_CERTS=%s (Node)\n", n.CAPath, n.CAPath)
	}
	if n.VoiceAddr != "" {
		fmt.Printf("  voice            wss://%s   (media UDP %s)\n", n.VoiceAddr, n.VoiceUDP)
		if n.WebRTCUDP != "" {
			fmt.Printf("  webrtc           UDP %s (browsers)\n", n.WebRTCUDP)
		}
	}
	if *nats != "" {
		var urls []string
		for _, u := range strings.Split(*nats, ",") {
			urls = append(urls, redactURL(strings.TrimSpace(u)))
		}
		fmt.Printf("  cluster          NATS %s, roles %s\n", strings.Join(urls, ","), n.Roles)
	} else {
		fmt.Printf("  cluster          this node alone (embedded NATS), roles %s\n", n.Roles)
	}
	fmt.Printf("  data             %s\n", abs)
	if *postgres != "" {
		fmt.Printf("  store            %s\n", redactURL(*postgres))
	}
	// The token itself is not printed: logs are often readable by more
	// people than the data directory.
	fmt.Printf("  admin token      in %s\n", filepath.Join(abs, "admin.token"))
	if *demo {
		d, err := n.SeedDemo(ctx)
		if err != nil {
			n.Close()
			return fmt.Errorf("demo: %w", err)
		}
		fmt.Printf("\nDemo guild %q (id %s)\n", server.DemoGuildName, d.GuildID)
		fmt.Printf("  #general %s   #random %s   voice Lounge %s\n", d.General, d.Random, d.Lounge)
		fmt.Printf("  bot   %-10s id %s  token %s\n", d.Bot.Username, d.Bot.ID, d.BotToken)
		fmt.Printf("  user  %-10s id %s  token %s\n", d.Alice.Username, d.Alice.ID, d.AliceToken)
		fmt.Printf("  user  %-10s id %s  token %s\n", d.Bob.Username, d.Bob.ID, d.BobToken)
		fmt.Printf("\nTry: curl -H 'Authorization: Bot %s' http://%s/api/v10/users/@me\n", d.BotToken, n.HTTPAddr)
	}
	select {
	case <-ctx.Done():
		fmt.Println("shutting down")
	case <-n.DrainRequested():
		fmt.Println("draining, as asked through the admin API; shutting down")
	}
	return n.Close()
}

func gatewayOr(url, addr string) string {
	if url != "" {
		return url
	}
	return "ws://" + addr
}

// redactURL hides a password in a postgres:// or nats:// URL for
// printing; a key=value string (which may hold one anywhere) is not shown.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "(address not shown)"
	}
	return u.Redacted()
}
