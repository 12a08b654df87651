package netstack

import (
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// PathMTUFunc returns the MTU of the first hop this host forwards a packet
// from the device to client on (the packet coming from server), or 0 when
// it does not know.
type PathMTUFunc func(client, server netip.Addr) int

// Limits of the path-MTU cache: how long an answer holds, how many
// clients it remembers, and how many lookups a second it makes (a flood
// of SYNs from ever new addresses must not stall the device's reader).
const (
	pathMTUTTL        = 10 * time.Second
	pathMTUEntries    = 4096
	pathMTULookupsPer = 200 // per second
)

// A path MTU reported by an ICMP error holds for pathMTUReportedTTL (as
// long as the kernel keeps one), and no report takes it below
// pathMTUMin4 (the kernel's route/min_pmtu) or the IPv6 minimum.
const (
	pathMTUReportedTTL = 10 * time.Minute
	pathMTUMin4        = 552
)

// mssClamp lowers the MSS option of a client's SYN to what this host's
// own path back to the client carries. The stack sizes its segments by
// the device's MTU and the client's MSS; when the host's interface (or
// route) towards the client is narrower than the device, the kernel
// refuses the larger packets with "fragmentation needed" addressed to
// the server, whose address the stack's packets carry, and no one who
// could act on it hears of it. Clamping the MSS, as routers do for such
// links, keeps every segment small enough. The same answers let the
// endpoint send IPv4 datagrams that do not fit without DF, and split IPv6
// ones into fragments (fit.go).
//
// A narrower link further on, behind another router, shows only when
// that router refuses a packet: its "fragmentation needed" or "packet too
// big" comes back through the device (the client's side routes the
// server's addresses there). The stack adapts the flow it is about;
// reported remembers the MTU for the client, so that later flows fit
// from their first segment instead of each losing its first flight.
type mssClamp struct {
	lookup PathMTUFunc
	mtu    int // the device's
	stats  *Stats
	logf   func(client netip.Addr, mtu int, reportedBy netip.Addr) // reportedBy invalid: this host's own route

	mu      sync.Mutex // guards the following; held across a lookup
	paths   map[netip.Addr]pathMTU
	window  time.Time // start of the second lookups are counted in
	lookups int
}

type pathMTU struct {
	mtu     int // of this host's own route, 0 if unknown
	expires time.Time

	reported      int // by an ICMP error from further on, 0 if none
	reportedUntil time.Time
}

// narrowest returns the smaller of the route's MTU and a reported one
// still in force (0 if neither is known).
func (p pathMTU) narrowest(now time.Time) int {
	if p.reported > 0 && now.Before(p.reportedUntil) && (p.mtu == 0 || p.reported < p.mtu) {
		return p.reported
	}
	return p.mtu
}

func newMSSClamp(lookup PathMTUFunc, mtu int, stats *Stats, logf func(netip.Addr, int, netip.Addr)) *mssClamp {
	return &mssClamp{lookup: lookup, mtu: mtu, stats: stats, logf: logf, paths: make(map[netip.Addr]pathMTU)}
}

// clamp lowers the MSS option of seg, a SYN from client to server, when
// the path to the client needs it, and reports whether it did.
func (c *mssClamp) clamp(client, server []byte, seg []byte) bool {
	mtu := c.pathMTU(client, server)
	if !c.narrows(mtu) {
		return false
	}
	hdr := header.IPv4MinimumSize
	if len(client) == header.IPv6AddressSize {
		hdr = header.IPv6MinimumSize
	}
	if !clampMSSOption(seg, uint16(mtu-hdr-header.TCPMinimumSize)) {
		return false
	}
	binary.BigEndian.PutUint16(seg[16:], 0)
	binary.BigEndian.PutUint16(seg[16:], ^checksum.Checksum(seg, pseudoHeader(client, server, protoTCP, len(seg))))
	c.stats.MSSClamped.Add(1)
	return true
}

// narrows reports whether mtu, a path MTU pathMTU returned, is a known
// one smaller than the device's.
func (c *mssClamp) narrows(mtu int) bool { return mtu > 0 && mtu < c.mtu }

// pathMTU returns the path MTU towards client: that of this host's route
// (from the cache or a new lookup) or a narrower one reported further on;
// 0 when unknown or over the lookup budget.
func (c *mssClamp) pathMTU(clientIP, serverIP []byte) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	client, _ := netip.AddrFromSlice(clientIP)
	now := time.Now()
	p, ok := c.paths[client]
	if ok && now.Before(p.expires) {
		return p.narrowest(now)
	}
	if now.Sub(c.window) >= time.Second {
		c.window, c.lookups = now, 0
	}
	if c.lookups >= pathMTULookupsPer {
		return pathMTU{reported: p.reported, reportedUntil: p.reportedUntil}.narrowest(now)
	}
	c.lookups++
	server, _ := netip.AddrFromSlice(serverIP)
	mtu := c.lookup(client, server)
	if !validPathMTU(mtu, len(clientIP) == header.IPv6AddressSize) {
		mtu = 0
	}
	if c.narrows(mtu) && (!ok || p.mtu != mtu) {
		c.logf(client, mtu, netip.Addr{})
	}
	p.mtu, p.expires = mtu, now.Add(pathMTUTTL)
	c.store(client, p, now)
	return p.narrowest(now)
}

// reported takes note of an ICMP "fragmentation needed" or "packet too
// big" from the device: a router towards client, from, could not forward
// a packet of mtu bytes or more. A report that does not narrow the path
// below the device's MTU is ignored; one below the smallest MTU a path may
// have counts as that smallest. Only the first report while none is in
// force is logged: the client side could send reports of ever smaller
// MTUs, and the log must not carry one line for each.
func (c *mssClamp) reported(client netip.Addr, mtu int, from netip.Addr) {
	floor := pathMTUMin4
	if client.Is6() {
		floor = header.IPv6MinimumMTU
	}
	mtu = max(mtu, floor)
	if !c.narrows(mtu) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	p := c.paths[client]
	inForce := p.reported > 0 && now.Before(p.reportedUntil)
	if inForce && p.reported <= mtu {
		return // only a narrower report replaces one in force
	}
	if !inForce {
		c.logf(client, mtu, from)
	}
	p.reported, p.reportedUntil = mtu, now.Add(pathMTUReportedTTL)
	c.store(client, p, now)
}

// store keeps p for client, making room among entries that have nothing
// in force any more; with none to drop, it is not kept. c.mu is held.
func (c *mssClamp) store(client netip.Addr, p pathMTU, now time.Time) {
	if _, ok := c.paths[client]; !ok && len(c.paths) >= pathMTUEntries {
		for a, q := range c.paths {
			if !now.Before(q.expires) && !now.Before(q.reportedUntil) {
				delete(c.paths, a)
			}
		}
	}
	if _, ok := c.paths[client]; ok || len(c.paths) < pathMTUEntries {
		c.paths[client] = p
	}
}

// validPathMTU reports whether mtu is one an IPv4 (at least 68) or IPv6
// (at least 1280) path can have.
func validPathMTU(mtu int, v6 bool) bool {
	if v6 {
		return mtu >= header.IPv6MinimumMTU
	}
	return mtu >= 68
}

// clampMSSOption lowers the MSS option of the TCP segment seg to mss if it
// is larger, and reports whether it changed it. The checksum is the
// caller's. A SYN without the option already implies a small MSS (536 or
// 1220 bytes), and options that do not parse are left alone.
func clampMSSOption(seg []byte, mss uint16) bool {
	if len(seg) < header.TCPMinimumSize {
		return false
	}
	end := int(seg[12]>>4) * 4
	if end < header.TCPMinimumSize || end > len(seg) {
		return false
	}
	for i := header.TCPMinimumSize; i < end; {
		switch kind := seg[i]; kind {
		case header.TCPOptionEOL:
			return false
		case header.TCPOptionNOP:
			i++
			continue
		}
		if i+1 >= end || seg[i+1] < 2 || i+int(seg[i+1]) > end {
			return false
		}
		if seg[i] == header.TCPOptionMSS {
			if seg[i+1] != header.TCPOptionMSSLength {
				return false
			}
			if binary.BigEndian.Uint16(seg[i+2:]) <= mss {
				return false
			}
			binary.BigEndian.PutUint16(seg[i+2:], mss)
			return true
		}
		i += int(seg[i+1])
	}
	return false
}
