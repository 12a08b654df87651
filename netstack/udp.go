package netstack

import (
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// udpHandler judges the first datagram of every UDP 5-tuple gVisor has no
// endpoint for, and turns allowed ones into relayed sessions.
type udpHandler struct {
	g        *Gateway
	sessions atomic.Int64 // admitted sessions not yet ended
}

func newUDPHandler(g *Gateway) *udpHandler {
	h := &udpHandler{g: g}
	g.stack.SetTransportProtocolHandler(udp.ProtocolNumber, h.handle)
	return h
}

// handle runs on the packet path. Returning false makes the stack answer
// with ICMP port unreachable. ICMP errors about a session's datagrams
// upstream are passed back to the client (passOn).
func (h *udpHandler) handle(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	f := flowOf(policy.UDP, id)
	now := time.Now()
	idle := h.g.cfg.Limits.UDPIdle
	fid, v, held := h.g.judge(&f, keyOf(f), now, idle, h.g.capture(pkt))
	if held {
		return true
	}
	if v.Effective() != policy.Allow {
		h.g.tapRefusedBuffer(pkt)
		return v.Effective() == policy.Deny
	}
	if !h.admit(fid, f, v) {
		return false
	}
	// Dial before answering anything: an unreachable upstream gets the
	// client an ICMP error rather than a session that goes nowhere.
	// The session's datagrams go with the TTL each had left.
	hops := limitedHops(pkt.NetworkHeader().Slice())
	up, err := h.g.dial("udp", f, hops)
	if err != nil {
		h.g.dialFailed(fid, f, v, 0, err)
		h.release(fid)
		return false
	}
	up = lazyDatagrams(up)
	var wq waiter.Queue
	ep, terr := udp.NewForwarderRequest(h.g.stack, id, pkt).CreateEndpoint(&wq)
	if terr != nil {
		up.Close()
		h.g.closed(fid, f, v, FlowStats{Reason: reasonRST})
		h.release(fid)
		return true
	}
	client := newClientDatagrams(&wq, ep)
	followHops(up, hops, client.lastHops)
	s := &relay{
		client:   side{conn: client},
		upstream: side{conn: up, icmpError: func(err error) bool { return h.passOn(f, up, err) }},
		datagram: true,
		idle:     idle,
		buffers:  &h.g.relayBuffers,
	}
	if isDNS(f) {
		s.outFilter, s.inFilter = (&dnsFilter{g: h.g, id: fid, flow: f}).datagrams(client)
	}
	h.g.flows.add(fid, f, v, now, s)
	h.g.workers.run(func() { h.run(fid, f, v, now, s) })
	return true
}

// admit applies max_udp_sessions and max_flows to an allowed session.
func (h *udpHandler) admit(fid uint64, f policy.Flow, v policy.Verdict) bool {
	if h.sessions.Add(1) > int64(h.g.cfg.Limits.MaxUDPSessions) {
		h.sessions.Add(-1)
		h.g.stats.RefusedUDPSessions.Add(1)
		h.g.refused(fid, f, &v, "max_udp_sessions")
		return false
	}
	if !h.g.reserve(fid, f, &v) {
		h.sessions.Add(-1)
		return false
	}
	return true
}

func (h *udpHandler) release(fid uint64) {
	h.sessions.Add(-1)
	h.g.flows.remove(fid)
}

func (h *udpHandler) run(fid uint64, f policy.Flow, v policy.Verdict, start time.Time, s *relay) {
	reason := s.run()
	h.g.closed(fid, f, v, FlowStats{
		BytesOut: s.out.Load(),
		BytesIn:  s.in.Load(),
		Duration: time.Since(start),
		Reason:   reason,
	})
	h.release(fid) // last: Close waits for this, so the event is out
}

// passOn sends the client of flow f the ICMP error that its upstream
// socket up reported as err, as a router between them would pass it on,
// quoting the datagram as far as the error did, and reports whether err
// was one. A socket that does not queue its errors (a dialer other than
// the host's) reports only a port unreachable, as ECONNREFUSED: that one
// is passed on with an empty datagram quoted.
func (h *udpHandler) passOn(f policy.Flow, up net.Conn, err error) bool {
	errno, ok := socketErrno(err)
	if !ok {
		return false
	}
	if e := queuedDatagramError(up); e != nil {
		h.g.ep.WriteRaw(datagramError(f.Src, f.Dst, sender(e.From, f.Dst.Addr()), e))
		return true
	}
	if errno == syscall.ECONNREFUSED {
		h.g.ep.WriteRaw(portUnreachable(f.Src, f.Dst))
		return true
	}
	return false
}

// socketErrno returns the errno in err, a socket call's error, unless there
// is none or it is EAGAIN: an ICMP error about an earlier datagram or echo
// request shows as such an errno.
func socketErrno(err error) (syscall.Errno, bool) {
	var errno syscall.Errno
	if !errors.As(err, &errno) || errno == syscall.EAGAIN {
		return 0, false
	}
	return errno, true
}
