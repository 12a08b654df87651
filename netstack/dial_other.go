//go:build !linux

package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"
)

// hostDialer dials plain host sockets: marks and interface binding are
// Linux features.
func hostDialer(mark uint32, iface string, spares *spareSockets) DialFunc {
	d := &net.Dialer{}
	return d.DialContext
}

// hostPinger is not implemented off Linux yet.
func hostPinger(mark uint32, iface string) PingFunc {
	return func(context.Context, netip.Addr) (EchoConn, error) {
		return nil, errors.New("upstream ICMP echo is not supported on this platform yet")
	}
}

// queuedDatagramError reads ICMP errors off a socket's error queue, which
// is a Linux feature.
func queuedDatagramError(net.Conn) *ICMPError { return nil }

// segmentsIn would read the socket's TCP_INFO, a Linux feature: keepalive
// probes from the server do not keep a flow from being idle here.
func segmentsIn(net.Conn) uint64 { return 0 }

// connectSegments is what segmentsIn gives after a connect: nothing here.
const connectSegments = 0

// upstreamReset would read the socket's pending error; not done here yet.
func upstreamReset(net.Conn) bool { return false }

// keepaliveUpstream turns keepalive probes on the upstream TCP connection
// c on or off (keepaliveTiming).
func keepaliveUpstream(c net.Conn, on bool, idle time.Duration) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	first, interval, count := keepaliveTiming(idle)
	tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: on, Idle: first, Interval: interval, Count: count})
}
