// Package server assembles one Chorus node from its parts: the store, the
// cluster node (embedded NATS), the guild router, the gateway and its HTTP
// listeners. It holds wiring only; the behaviour lives in the parts.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chorus-voice/chorus/auth"
	"github.com/chorus-voice/chorus/cluster"
	"github.com/chorus-voice/chorus/crypto"
	"github.com/chorus-voice/chorus/guild"
	"github.com/chorus-voice/chorus/ring"
	"github.com/chorus-voice/chorus/rtc"
	"github.com/chorus-voice/chorus/sfu"
	"github.com/chorus-voice/chorus/signaling"
	"github.com/chorus-voice/chorus/snowflake"
	"github.com/chorus-voice/chorus/store"
	"github.com/chorus-voice/chorus/transport"
	"github.com/chorus-voice/chorus/web"
)

// Config configures a node. The zero value of each field takes the default
// documented on it.
type Config struct {
	// DataDir holds the store, the embedded NATS files, the development CA
	// and the admin token. Default "./data".
	DataDir string
	// HTTPAddr serves plain ws:// and http:// (gateway, REST, admin).
	// Default "127.0.0.1:8080"; port 0 picks a free port.
	HTTPAddr string
	// HTTPSAddr serves the same over TLS (wss://, https://). Default
	// "127.0.0.1:8443"; "off" disables it.
	HTTPSAddr string
	// TLSCert and TLSKey are a real certificate; without them a development
	// CA under DataDir/tls signs one for localhost, 127.0.0.1 and ::1.
	TLSCert, TLSKey string
	// GatewayURL is the URL clients are told to dial; default ws://HTTPAddr.
	GatewayURL string
	// VoiceAddr serves the voice gateway over TLS (clients always dial
	// wss://, clients.md §1). Default "127.0.0.1:8444"; "off" disables voice.
	VoiceAddr string
	// VoiceUDP is the voice media socket; default: VoiceAddr's host and port.
	VoiceUDP string
	// WebRTCUDP is the one UDP port of every WebRTC (browser) participant;
	// default: VoiceUDP's host and the next port (any free port when
	// VoiceUDP's is 0); "off": Select Protocol "webrtc" is refused.
	WebRTCUDP string
	// WebRTCConnectTimeout bounds a WebRTC client's ICE and DTLS; default
	// rtc.DefaultConnectTimeout.
	WebRTCConnectTimeout time.Duration
	// VoiceModes are the voice encryption modes offered, in order; default
	// all, AES-GCM first.
	VoiceModes []crypto.Mode
	// NodeID names this node; default "node-1".
	NodeID string
	// NATS joins an external NATS cluster (comma-separated URLs) instead of
	// starting the embedded server.
	NATS string
	// Postgres, a postgres:// URL, keeps users, guilds and messages in
	// PostgreSQL instead of the embedded store under DataDir.
	Postgres string
	// Roles narrows what the node serves (issue 10): without RoleGateway it
	// refuses client connections and REST calls (its admin API and metrics
	// stay), without RoleGuild the ring places no guild on it, without
	// RoleVoice it runs no voice gateway or media socket. Default all.
	Roles ring.Role
	// Advertise is the host clients and other nodes reach this node at; it
	// replaces the listeners' host in every address the node announces
	// (gateway URL, voice endpoint, voice media IP, its cluster record).
	// Default: the listeners' own addresses.
	Advertise string
	// Membership timing: heartbeat interval, heartbeat TTL (whole seconds)
	// and self-fence time; defaults cluster.DefaultHeartbeatEvery,
	// DefaultTTL and DefaultFenceAfter.
	HeartbeatEvery, HeartbeatTTL, FenceAfter time.Duration
	// MaxConnsPerIP is how many connections one source IP may hold on each
	// listener; default 1000, negative for no limit (a load tester on the
	// same machine needs that).
	MaxConnsPerIP int
	// Gateway tunes the edge (heartbeat interval, limits, ...).
	Gateway signaling.Config
	Logger  *slog.Logger
}

// Timeouts of a node's start and stop.
const (
	// shutdownTimeout bounds Close: clients told to reconnect and listeners
	// drained; what is left after it is cut.
	shutdownTimeout = 5 * time.Second
	// storeOpenTimeout bounds connecting to PostgreSQL at start.
	storeOpenTimeout = 30 * time.Second
)

// Errors of a node's configuration.
var (
	// ErrClusterNeedsPostgres: the nodes of a cluster share one store, and
	// an embedded store cannot be shared.
	ErrClusterNeedsPostgres = errors.New("--nats needs --postgres: the nodes of a cluster share one PostgreSQL store (an embedded store cannot be shared)")
)

// Node is a running Chorus node.
type Node struct {
	cfg Config
	// demoUsers, once SeedDemo ran, are offered by the web client's
	// sign-in page.
	demoUsers atomic.Pointer[[]web.DemoUser]
	store     store.Store
	cluster   *cluster.Node
	router    *guild.Router
	gateway   *signaling.Gateway
	ids       *snowflake.Generator
	signer    *auth.Signer
	servers   []*http.Server
	voice     *signaling.VoiceGateway
	udp       *transport.Server
	sfu       *sfu.Node
	webrtc    *rtc.Leg

	closeOnce sync.Once
	mediaIP   netip.Addr // announced for voice media (--advertise); zero: the socket's own

	// HTTPAddr and HTTPSAddr are the bound addresses ("" when off).
	HTTPAddr, HTTPSAddr string
	// VoiceAddr and VoiceUDP are the voice gateway and media addresses;
	// WebRTCUDP the WebRTC port ("" when off).
	VoiceAddr, VoiceUDP, WebRTCUDP string
	// CAPath is the development CA clients must trust ("" with real certs).
	CAPath string
	// AdminToken authenticates the admin API.
	AdminToken string
	// Roles are what the node serves (Config.Roles, without voice when
	// voice is off).
	Roles ring.Role
}

// Start opens the data directory and starts serving.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:8080"
	}
	if cfg.HTTPSAddr == "" {
		cfg.HTTPSAddr = "127.0.0.1:8443"
	}
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	if cfg.VoiceAddr == "" {
		cfg.VoiceAddr = "127.0.0.1:8444"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxConnsPerIP == 0 {
		cfg.MaxConnsPerIP = signaling.DefaultMaxConnsPerIP
	}
	if cfg.NATS != "" && cfg.Postgres == "" {
		return nil, ErrClusterNeedsPostgres
	}
	if cfg.Roles == 0 {
		cfg.Roles = ring.RoleAll
	}
	if cfg.Roles&ring.RoleVoice == 0 {
		cfg.VoiceAddr = "off"
	}
	if cfg.VoiceAddr == "off" {
		cfg.Roles &^= ring.RoleVoice // the cluster record says what the node serves
		if cfg.Roles == 0 {
			return nil, errors.New("--voice off leaves this node no role: give it gateway or guild in --roles")
		}
	}
	mediaIP, err := checkAdvertise(ctx, cfg.Advertise)
	if err != nil {
		return nil, err
	}
	if err := secureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, mediaIP: mediaIP, Roles: cfg.Roles}
	ok := false
	// Listeners opened but not yet served are closed here on failure;
	// n.Close stops the served ones.
	var unserved []net.Listener
	defer func() {
		if !ok {
			for _, ln := range unserved {
				ln.Close()
			}
			n.Close()
		}
	}()
	st, err := openStore(ctx, cfg)
	if err != nil {
		return nil, err
	}
	n.store = st
	// The store may have created files as the process umask allowed.
	if err := secureDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	key, err := metaSecret(ctx, st, "signing_key")
	if err != nil {
		return nil, err
	}
	n.signer = auth.NewSigner(key)
	if n.AdminToken, err = adminToken(cfg.DataDir); err != nil {
		return nil, err
	}
	h := fnv.New32a()
	h.Write([]byte(cfg.NodeID))
	n.ids = snowflake.NewGenerator(uint16(h.Sum32() & 0x3FF))

	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	unserved = append(unserved, httpLn)
	n.HTTPAddr = httpLn.Addr().String()
	var httpsLn net.Listener
	if cfg.HTTPSAddr != "off" {
		if httpsLn, err = net.Listen("tcp", cfg.HTTPSAddr); err != nil {
			return nil, fmt.Errorf("listen %s: %w", cfg.HTTPSAddr, err)
		}
		unserved = append(unserved, httpsLn)
		n.HTTPSAddr = httpsLn.Addr().String()
	}

	gcfg := cfg.Gateway
	gcfg.NodeID, gcfg.AdminToken, gcfg.Logger = cfg.NodeID, n.AdminToken, cfg.Logger
	if gcfg.GatewayURL = cfg.GatewayURL; gcfg.GatewayURL == "" {
		gcfg.GatewayURL = "ws://" + n.announced(n.HTTPAddr)
	}
	metrics := &signaling.Metrics{}

	// Everything is built before anything is served, in dependency order:
	// the voice side (the router places voice rooms through it), the
	// session hub, the router, then the gateway and APIs over them.
	var tlsCfg *tls.Config
	var voiceLn net.Listener
	if httpsLn != nil || cfg.VoiceAddr != "off" {
		// Voice has its own TLS listener, so it runs with or without the
		// HTTPS one.
		var cert tls.Certificate
		if cfg.TLSCert != "" {
			cert, err = tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		} else {
			n.CAPath, cert, err = DevCA(filepath.Join(cfg.DataDir, "tls"), []string{"localhost", "127.0.0.1", "::1"})
		}
		if err != nil {
			err = fmt.Errorf("tls: %w", err)
		} else if cfg.VoiceAddr != "off" {
			if voiceLn, err = n.startVoice(cfg, metrics); err == nil {
				unserved = append(unserved, voiceLn)
			}
		}
		if err != nil {
			return nil, err
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	// The cluster record names the addresses others reach: the voice
	// endpoint (VOICE_SERVER_UPDATE's, for voice placement) and HTTP.
	public := n.announced(n.VoiceAddr)
	if public == "" {
		public = n.announced(n.HTTPSAddr)
	}
	n.cluster, err = cluster.Start(cluster.Config{NodeID: cfg.NodeID, Roles: cfg.Roles, Addr: public,
		HTTP: n.announced(n.HTTPAddr), DataDir: cfg.DataDir, NATSURLs: cfg.NATS, Logger: cfg.Logger, Load: n.load,
		HeartbeatEvery: cfg.HeartbeatEvery, TTL: cfg.HeartbeatTTL, FenceAfter: cfg.FenceAfter})
	if err != nil {
		return nil, err
	}
	hub := signaling.NewHub(gcfg, metrics)
	deps := guild.Deps{Placement: n.cluster, Store: st, Sessions: hub, IDs: n.ids, Peers: n.cluster,
		VoiceToken: func(user guild.ID) string { return signaling.VoiceToken(n.signer, user) }, Logger: cfg.Logger}
	sources := []signaling.MetricsWriter{metrics, hub}
	if n.voice != nil {
		deps.Voice = n.voice // left nil (no interface holding a nil pointer) when voice is off
		sources = append(sources, n.voice, n.sfu, &n.udp.Stats)
	}
	n.router = guild.NewRouter(guild.Config{}, deps)
	edge := signaling.Deps{Store: st, Signer: n.signer, Router: n.router, Hub: hub, Metrics: metrics, Cluster: n.cluster}
	n.gateway = signaling.NewGateway(gcfg, edge)
	api := signaling.NewAPI(gcfg, edge, n.ids, n.revoke)
	site := web.Handler(func() []web.DemoUser {
		if u := n.demoUsers.Load(); u != nil {
			return *u
		}
		return nil
	})
	handler := signaling.Handler(n.gateway, api, signaling.NewOps(append(sources, n.router, n.cluster)...), site)
	if cfg.Roles&ring.RoleGateway == 0 {
		handler = noClients(handler)
	}
	// The node joins the ring only now, when it can answer other nodes.
	if err := n.cluster.Serve(cluster.Handlers{Call: n.router.ServeCall, Batch: n.gateway.ServeBatch}); err != nil {
		return nil, err
	}

	n.serve(httpLn, handler, nil)
	if httpsLn != nil {
		n.serve(httpsLn, handler, tlsCfg)
	}
	if voiceLn != nil {
		n.serve(voiceLn, n.voice, tlsCfg)
	}
	ok = true
	return n, nil
}

// load is what the node reports of its work in each heartbeat.
func (n *Node) load() cluster.Load {
	var l cluster.Load
	if n.gateway != nil {
		l.Sessions = n.gateway.Hub().Len()
	}
	if n.router != nil {
		l.Guilds = n.router.Loaded()
	}
	return l
}

// revoke ends the voice connections and then the gateway sessions of a
// user whose tokens were just revoked.
func (n *Node) revoke(user snowflake.ID) {
	if n.voice != nil {
		n.voice.Revoke(user)
	}
	n.gateway.Revoke(user)
}

func (n *Node) serve(ln net.Listener, h http.Handler, tc *tls.Config) {
	// A config of its own: net/http adds its protocols to the one it is
	// given, and two servers must not do that to one config.
	tc = tc.Clone()
	srv := signaling.NewHTTPServer(h, tc, n.cfg.Logger, n.cfg.Gateway.HTTP)
	ln = signaling.LimitPerIP(ln, n.cfg.MaxConnsPerIP, tc == nil, n.gateway.Metrics())
	n.servers = append(n.servers, srv)
	go func() {
		var err error
		if tc != nil {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.cfg.Logger.Error("http server", "addr", ln.Addr(), "err", err)
		}
	}()
}

// startVoice opens the voice gateway's listener and the media socket and
// builds the voice gateway; the caller serves the listener once the rest
// of the node is built.
func (n *Node) startVoice(cfg Config, metrics *signaling.Metrics) (net.Listener, error) {
	ln, err := net.Listen("tcp", cfg.VoiceAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.VoiceAddr, err)
	}
	n.VoiceAddr = ln.Addr().String()
	udpAddr := cfg.VoiceUDP
	if udpAddr == "" {
		udpAddr = n.VoiceAddr
	}
	// One media socket and worker per core, up to 8 (SO_REUSEPORT).
	workers := min(max(runtime.GOMAXPROCS(0), 1), 8)
	n.sfu = sfu.NewNode(workers)
	if n.udp, err = transport.Listen(udpAddr, n.sfu, workers); err != nil {
		ln.Close()
		return nil, fmt.Errorf("voice udp %s: %w", udpAddr, err)
	}
	n.VoiceUDP = n.udp.Addr().String()
	n.udp.Serve()
	media := n.udp.Addr()
	if n.mediaIP.IsValid() {
		media = netip.AddrPortFrom(n.mediaIP, media.Port())
	}
	if err := n.startWebRTC(cfg, media); err != nil {
		n.udp.Close()
		ln.Close()
		return nil, err
	}
	n.voice = signaling.NewVoiceGateway(signaling.VoiceConfig{UDP: media, WebRTC: n.webrtc, Media: n.udp,
		HeartbeatInterval: cfg.Gateway.HeartbeatInterval, Modes: cfg.VoiceModes, Metrics: metrics, Logger: cfg.Logger,
		IdentifyTimeout: cfg.Gateway.IdentifyTimeout, PayloadsPerMinute: cfg.Gateway.PayloadsPerMinute,
		LookupState: func(ctx context.Context, g, user guild.ID) (guild.VoiceChange, error) {
			return n.router.VoiceState(ctx, g, user) // built after the voice side; called only once serving
		}}, n.signer, n.sfu)
	return ln, nil
}

// startWebRTC opens the WebRTC leg's shared port (Config.WebRTCUDP).
func (n *Node) startWebRTC(cfg Config, media netip.AddrPort) error {
	addr := cfg.WebRTCUDP
	if addr == "off" {
		return nil
	}
	if addr == "" {
		bound := n.udp.Addr()
		port := 0
		if bound.Port() != 0 && !strings.HasSuffix(cfg.VoiceUDP, ":0") && !strings.HasSuffix(cfg.VoiceAddr, ":0") {
			port = int(bound.Port()) + 1
		}
		addr = net.JoinHostPort(bound.Addr().String(), strconv.Itoa(port))
	}
	leg, err := rtc.Listen(rtc.Config{Listen: addr, ConnectTimeout: cfg.WebRTCConnectTimeout, Logger: cfg.Logger})
	if err != nil {
		return fmt.Errorf("webrtc udp %s: %w (set --webrtc-udp, or off)", addr, err)
	}
	if n.mediaIP.IsValid() {
		leg.SetAdvertise(netip.AddrPortFrom(n.mediaIP, leg.LocalAddr().Port()))
	}
	n.webrtc = leg
	n.WebRTCUDP = leg.LocalAddr().String()
	return nil
}

// WebRTC returns the WebRTC leg, nil when it is off.
func (n *Node) WebRTC() *rtc.Leg { return n.webrtc }

// Voice returns the voice gateway, nil when voice is off.
func (n *Node) Voice() *signaling.VoiceGateway { return n.voice }

// SFU returns the voice node, nil when voice is off.
func (n *Node) SFU() *sfu.Node { return n.sfu }

// UDP returns the media socket, nil when voice is off.
func (n *Node) UDP() *transport.Server { return n.udp }

// Router returns the node's guild router (for seeding and tests in process).
func (n *Node) Router() *guild.Router { return n.router }

// DrainRequested is closed when an operator asked, through the admin API
// of any node, that this node drain; the caller then stops it with Close.
func (n *Node) DrainRequested() <-chan struct{} { return n.gateway.Hub().DrainRequested() }

// Gateway returns the node's gateway.
func (n *Node) Gateway() *signaling.Gateway { return n.gateway }

// IssueToken issues a gateway/REST token of the user's current generation.
func (n *Node) IssueToken(u store.User) string {
	return n.signer.Issue(auth.PurposeUser, u.ID, u.TokenGen)
}

// IDs returns the node's snowflake generator.
func (n *Node) IDs() *snowflake.Generator { return n.ids }

// Close tells connected gateway clients to reconnect (op 7) and closes
// them, stops the listeners, and closes the cluster node and the store.
func (n *Node) Close() error {
	var err error
	n.closeOnce.Do(func() { err = n.close() })
	return err
}

func (n *Node) close() error {
	// First the gateway sessions: clients are told to reconnect (op 7)
	// and resume at other nodes, which take the sessions over from this
	// one while it still serves everything else (signaling/handoff.go).
	if n.gateway != nil {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		n.gateway.Shutdown(ctx)
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// Then the guilds, before anything stops answering: until the ring
	// without this node arrives, calls placed with the old one are served
	// here; after it, they go to the new owners.
	if n.cluster != nil {
		if err := n.cluster.Leave(ctx); err != nil {
			n.cfg.Logger.Warn("leaving the cluster", "err", err)
		}
	}
	for _, s := range n.servers {
		s.Shutdown(ctx)
	}
	if n.webrtc != nil {
		n.webrtc.Close()
	}
	if n.udp != nil {
		n.udp.Close()
	}
	if n.router != nil {
		n.router.Close()
	}
	if n.gateway != nil {
		n.gateway.Close()
	}
	if n.cluster != nil {
		n.cluster.Close()
	}
	if n.store != nil {
		return n.store.Close()
	}
	return nil
}

// openStore opens PostgreSQL when configured, else the embedded store.
func openStore(ctx context.Context, cfg Config) (store.Store, error) {
	if cfg.Postgres == "" {
		return store.OpenPebble(filepath.Join(cfg.DataDir, "store"))
	}
	ctx, cancel := context.WithTimeout(ctx, storeOpenTimeout)
	defer cancel()
	return store.OpenPostgres(ctx, cfg.Postgres)
}

func metaSecret(ctx context.Context, st store.Store, name string) ([]byte, error) {
	k, err := st.GetMeta(ctx, name)
	if err == nil && len(k) == auth.KeySize {
		return k, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	k = auth.NewKey()
	return k, st.PutMeta(ctx, name, k)
}

// adminToken reads DataDir/admin.token, creating it on first start.
func adminToken(dir string) (string, error) {
	path := filepath.Join(dir, "admin.token")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	var b [24]byte
	rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	return tok, os.WriteFile(path, []byte(tok+"\n"), 0o600)
}
