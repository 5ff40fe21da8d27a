package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// advertiseTimeout bounds resolving an --advertise name at start.
const advertiseTimeout = 10 * time.Second

// announced returns a bound address (host:port) as clients and other nodes
// should dial it: the advertised host, when there is one, with the bound
// port.
func (n *Node) announced(bound string) string {
	if n.cfg.Advertise == "" || bound == "" {
		return bound
	}
	_, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	return net.JoinHostPort(n.cfg.Advertise, port)
}

// checkAdvertise validates an --advertise host and returns the IPv4
// address voice Ready announces for media (voice.md §3: the address is
// IPv4), resolving a name once at start. The zero Addr means "the media
// socket's own address" (no --advertise).
func checkAdvertise(ctx context.Context, host string) (netip.Addr, error) {
	if host == "" {
		return netip.Addr{}, nil
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return netip.Addr{}, fmt.Errorf("--advertise %q: a host name or IP address, without a port (each listener keeps its own)", host)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.IsUnspecified() {
			return netip.Addr{}, fmt.Errorf("--advertise %s: clients cannot dial an unspecified address", host)
		}
		return ip.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, advertiseTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("--advertise %q: no IPv4 address for it (voice clients need one): %v", host, err)
	}
	return ips[0].Unmap(), nil
}

// noClients serves a node without the gateway role: its admin API,
// /metrics and /healthz stay; a gateway connection or a REST call is
// answered 404 with a message that says where to go instead.
func noClients(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "/admin/") || p == "/metrics" || p == "/healthz" {
			h.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"message": "404: this node does not serve clients (its --roles leave out gateway); connect to a gateway node", "code": 0}`)
	})
}
