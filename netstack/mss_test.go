package netstack

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"

	"github.com/tunwall/tunwall/policy"
)

// synWithOptions is a SYN segment (TCP header only) carrying opts.
func synWithOptions(opts ...byte) []byte {
	seg := make([]byte, 20+len(opts))
	seg[12] = byte(len(seg)/4) << 4
	seg[13] = 0x02 // SYN
	copy(seg[20:], opts)
	return seg
}

func TestClampMSSOption(t *testing.T) {
	mss := func(v uint16) []byte { return []byte{2, 4, byte(v >> 8), byte(v)} }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	tests := []struct {
		name    string
		opts    []byte
		changed bool
		at      int // offset of the MSS value in the segment, when changed
	}{
		{"MSS first", cat(mss(1460), []byte{1, 1, 1, 0}), true, 22},
		{"MSS at an odd offset", cat([]byte{1}, mss(1460), []byte{0, 0, 0}), true, 23},
		{"MSS after window scale and SACK permitted", cat([]byte{3, 3, 7, 4, 2, 1}, mss(1460), []byte{1, 0}), true, 28},
		{"MSS already small enough", cat(mss(1300), []byte{1, 1, 1, 0}), false, 0},
		{"MSS equal to the clamp", cat(mss(1360), []byte{1, 1, 1, 0}), false, 0},
		{"no MSS option", []byte{3, 3, 7, 1}, false, 0},
		{"end of options before MSS", cat([]byte{0, 1, 1, 1}, mss(1460)), false, 0},
		{"option of length 0", cat([]byte{8, 0, 1, 1}, mss(1460)), false, 0},
		{"option running past the header", []byte{1, 1, 8, 10}, false, 0},
		{"MSS option of the wrong length", []byte{2, 3, 5, 0}, false, 0},
		{"MSS option cut by the header's end", []byte{1, 1, 2, 4}, false, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seg := synWithOptions(tc.opts...)
			orig := append([]byte(nil), seg...)
			if got := clampMSSOption(seg, 1360); got != tc.changed {
				t.Fatalf("clampMSSOption = %v, want %v", got, tc.changed)
			}
			if !tc.changed {
				if string(seg) != string(orig) {
					t.Fatalf("segment changed: %x -> %x", orig, seg)
				}
				return
			}
			if v := binary.BigEndian.Uint16(seg[tc.at:]); v != 1360 {
				t.Fatalf("MSS is %d, want 1360 (%x)", v, seg)
			}
			seg[tc.at], seg[tc.at+1] = orig[tc.at], orig[tc.at+1]
			if string(seg) != string(orig) {
				t.Fatalf("bytes besides the MSS changed: %x -> %x", orig, seg)
			}
		})
	}
	// A data offset past the segment, or below the header, is left alone.
	seg := synWithOptions(mss(1460)...)
	for _, off := range []byte{0xf0, 0x40} {
		seg[12] = off
		if clampMSSOption(seg, 1360) {
			t.Errorf("data offset %#x: clamped", off)
		}
	}
}

// TestMSSClampChecksum: a clamped SYN's checksum is right for its new
// MSS, and it is counted.
func TestMSSClampChecksum(t *testing.T) {
	for _, tc := range []struct {
		client, server string
		mss            uint16
	}{
		{"10.0.0.2:5000", "192.0.2.1:80", 1360},
		{"[fd00::2]:5000", "[2001:db8::1]:80", 1340},
	} {
		pkt := tcpSegment(t, tc.client, tc.server, layers.TCP{SYN: true, Seq: 7, Window: 65535,
			Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil)
		src, dst, seg, ok := tcpSYN(pkt)
		if !ok {
			t.Fatal("not a SYN")
		}
		var st Stats
		c := newMSSClamp(func(netip.Addr, netip.Addr) int { return 1400 }, 1500, &st, func(netip.Addr, int, netip.Addr) {})
		if !c.clamp(src, dst, seg) {
			t.Fatalf("%s: not clamped", tc.client)
		}
		if got := binary.BigEndian.Uint16(seg[22:]); got != tc.mss {
			t.Errorf("%s: MSS %d, want %d", tc.client, got, tc.mss)
		}
		if checksum.Checksum(seg, pseudoHeader(src, dst, protoTCP, len(seg))) != 0xffff {
			t.Errorf("%s: checksum wrong after the clamp", tc.client)
		}
		if st.MSSClamped.Load() != 1 {
			t.Errorf("%s: MSSClamped = %d", tc.client, st.MSSClamped.Load())
		}
	}
}

// TestPathMTULookups: an answer is remembered per client, a path as wide
// as the device (or an impossible MTU) clamps nothing, and new clients
// beyond the lookup budget go unclamped rather than stall the reader.
func TestPathMTULookups(t *testing.T) {
	lookups := map[netip.Addr]int{}
	paths := map[netip.Addr]int{
		netip.MustParseAddr("10.0.0.2"): 1400,
		netip.MustParseAddr("10.0.0.3"): 1500,
		netip.MustParseAddr("10.0.0.4"): 40,   // below IPv4's minimum
		netip.MustParseAddr("fd00::2"):  1000, // below IPv6's minimum
	}
	var logged []netip.Addr
	var st Stats
	c := newMSSClamp(func(client, _ netip.Addr) int {
		lookups[client]++
		if mtu, ok := paths[client]; ok {
			return mtu
		}
		return 1400
	}, 1500, &st, func(client netip.Addr, _ int, _ netip.Addr) { logged = append(logged, client) })
	server := netip.MustParseAddr("192.0.2.1").AsSlice()
	server6 := netip.MustParseAddr("2001:db8::1").AsSlice()
	syn := func() []byte { return synWithOptions(2, 4, 0x05, 0xb4) }
	for range 3 {
		if !c.clamp(netip.MustParseAddr("10.0.0.2").AsSlice(), server, syn()) {
			t.Fatal("10.0.0.2 (path 1400) not clamped")
		}
	}
	if n := lookups[netip.MustParseAddr("10.0.0.2")]; n != 1 {
		t.Errorf("10.0.0.2 looked up %d times for 3 SYNs", n)
	}
	if len(logged) != 1 {
		t.Errorf("logged %v, want the one narrow path once", logged)
	}
	for _, a := range []string{"10.0.0.3", "10.0.0.4"} {
		if c.clamp(netip.MustParseAddr(a).AsSlice(), server, syn()) {
			t.Errorf("%s (path %d) clamped", a, paths[netip.MustParseAddr(a)])
		}
	}
	if c.clamp(netip.MustParseAddr("fd00::2").AsSlice(), server6, syn()) {
		t.Error("fd00::2 (path 1000) clamped")
	}

	// The budget: 4 lookups so far this second; a flood of new clients
	// gets the rest, and the clients after it go unclamped.
	clamped := 0
	for i := range 2 * pathMTULookupsPer {
		client := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		if c.clamp(client.AsSlice(), server, syn()) {
			clamped++
		}
	}
	if total := len(lookups); total != pathMTULookupsPer {
		t.Errorf("%d clients looked up in one second, want the budget of %d", total, pathMTULookupsPer)
	}
	if clamped != pathMTULookupsPer-4 {
		t.Errorf("%d SYNs of the flood clamped, want %d", clamped, pathMTULookupsPer-4)
	}
	// A remembered client is still clamped with the budget spent.
	if !c.clamp(netip.MustParseAddr("10.0.0.2").AsSlice(), server, syn()) {
		t.Error("10.0.0.2 not clamped once the budget was spent")
	}
	// The next second brings a new budget.
	c.window = c.window.Add(-time.Second)
	if !c.clamp(netip.AddrFrom4([4]byte{10, 2, 0, 1}).AsSlice(), server, syn()) {
		t.Error("a new client not clamped in the next second")
	}
}

// TestMSSClampedToPathMTU: with the path back to the client narrower than
// the device, the stack's segments to the client fit that path.
func TestMSSClampedToPathMTU(t *testing.T) {
	for _, tc := range []struct {
		client, server string
		path, want     int // path MTU, largest payload
	}{
		{"10.0.0.2:5000", "192.0.2.1:80", 1400, 1360},
		{"[fd00::2]:5000", "[2001:db8::1]:80", 1400, 1340},
		{"10.0.0.2:5001", "192.0.2.1:80", 1500, 1460}, // as wide as the device: the client's MSS stands
	} {
		t.Run(tc.client, func(t *testing.T) {
			ups, h := pipeHarness(t, func(netip.Addr, netip.Addr) int { return tc.path })
			payload, size := firstDataSegment(t, h, ups, tc.client, tc.server)
			if payload != tc.want {
				t.Fatalf("first data segment carries %d bytes, want %d", payload, tc.want)
			}
			if size > tc.path {
				t.Fatalf("packet of %d bytes on a path of %d", size, tc.path)
			}
		})
	}
}

// pipeHarness starts a gateway with path whose flows each dial one end of
// a pipe of their own; the other ends come on the channel, one per dial.
func pipeHarness(t *testing.T, path PathMTUFunc) (<-chan net.Conn, *harness) {
	ups := make(chan net.Conn, 8)
	dial := func(context.Context, string, string) (net.Conn, error) {
		up, peer := net.Pipe()
		t.Cleanup(func() { peer.Close() })
		ups <- peer
		return up, nil
	}
	return ups, newHarnessWith(t, testPolicy, nil, dial, nil, policy.Limits{}, func(c *Config) { c.PathMTU = path })
}

// firstDataSegment opens a flow from client (whose SYN announces an MSS
// of 1460) to server, has its upstream (the next of ups) send 3 full
// segments' worth, and returns the payload and packet size of the first
// data segment the stack sends the client. The flow stays open.
func firstDataSegment(t *testing.T, h *harness, ups <-chan net.Conn, client, server string) (payload, size int) {
	t.Helper()
	h.send(tcpSegment(t, client, server, layers.TCP{SYN: true, Seq: 1000, Window: 65535,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil))
	port := layers.TCPPort(netip.MustParseAddrPort(client).Port())
	// The next packet to the client's port: earlier flows may still send.
	toClient := func(s *layers.TCP) bool { return s.DstPort == port }
	synAck := h.nextTCPWhere(t, toClient)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	h.send(tcpAck(t, client, server, 1001, synAck.Seq+1))
	up := <-ups // dialed before the SYN-ACK
	go func() {
		up.Write(make([]byte, 3*1460))
		io.Copy(io.Discard, up)
	}()
	p := h.nextTCPPacketWhere(t, toClient)
	return len(p.Layer(layers.LayerTypeTCP).(*layers.TCP).Payload), len(p.Data())
}

// tooBigReport is the ICMP error router (on the client's side) sends the
// server when it cannot forward a packet of the server's flow to client
// in mtu bytes: "fragmentation needed" or "packet too big", quoting it.
func tooBigReport(t testing.TB, router, client, server string, mtu int) []byte {
	quoted := tcpSegment(t, server, client, layers.TCP{ACK: true, Seq: 1, Ack: 1, Window: 100}, make([]byte, 1460))
	r, s := netip.MustParseAddr(router), netip.MustParseAddrPort(server).Addr()
	if r.Is4() {
		ip, _ := ipLayer(r, s, layers.IPProtocolICMPv4)
		icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: uint16(mtu)}
		return serialize(t, ip, icmp, gopacket.Payload(quoted[:ipv4HeaderLen+8]))
	}
	ip, nl := ipLayer(r, s, layers.IPProtocolICMPv6)
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	icmp.SetNetworkLayerForChecksum(nl)
	return serialize(t, ip, icmp, gopacket.Payload(binary.BigEndian.AppendUint32(nil, uint32(mtu))), gopacket.Payload(quoted[:1232]))
}

// TestMSSClampedToReportedPathMTU: a router further on reports (ICMP) that
// it could not forward a packet of the client's flow in more than 1400
// bytes, while the client's own route here is as wide as the device. The
// client's next flows are clamped to it; a wider report later does not
// undo it; malformed reports, and ones quoting a packet of no live flow,
// change nothing.
func TestMSSClampedToReportedPathMTU(t *testing.T) {
	wide := func(netip.Addr, netip.Addr) int { return 1500 }
	for _, tc := range []struct {
		router, client, server string
		want                   int
	}{
		{"10.0.0.1", "10.0.0.2:5000", "192.0.2.1:80", 1360},
		{"fd00::1", "[fd00::2]:5000", "[2001:db8::1]:80", 1340},
	} {
		t.Run(tc.client, func(t *testing.T) {
			ups, h := pipeHarness(t, wide)
			firstDataSegment(t, h, ups, tc.client, tc.server) // the flow the router quotes
			h.send(tooBigReport(t, tc.router, tc.client, tc.server, 1400))
			h.send(tooBigReport(t, tc.router, tc.client, tc.server, 1450))
			next := strings.Replace(tc.client, ":5000", ":5001", 1)
			if payload, _ := firstDataSegment(t, h, ups, next, tc.server); payload != tc.want {
				t.Fatalf("first data segment after the report carries %d bytes, want %d", payload, tc.want)
			}
		})
	}
	t.Run("not reports", func(t *testing.T) {
		ups, h := pipeHarness(t, wide)
		firstDataSegment(t, h, ups, "10.0.0.2:5000", "192.0.2.1:80")
		noMTU := tooBigReport(t, "10.0.0.1", "10.0.0.2:5000", "192.0.2.1:80", 0) // a router older than RFC 1191
		notV4 := tooBigReport(t, "10.0.0.1", "10.0.0.2:5000", "192.0.2.1:80", 1400)
		notV4[ipv4HeaderLen+icmpHeaderLen] = 0x65 // the quoted packet's version
		fixChecksums(notV4)
		wider := tooBigReport(t, "10.0.0.1", "10.0.0.2:5000", "192.0.2.1:80", 1500)
		noFlow := tooBigReport(t, "10.0.0.1", "10.0.0.2:5999", "192.0.2.1:80", 1400)
		for _, p := range [][]byte{noMTU, notV4, wider, noFlow} {
			h.send(p)
		}
		if payload, _ := firstDataSegment(t, h, ups, "10.0.0.2:5001", "192.0.2.1:80"); payload != 1460 {
			t.Fatalf("first data segment carries %d bytes, want the client's 1460", payload)
		}
	})
}

// TestUDPNoDFOnNarrowPath: an IPv4 datagram to a client that does not fit
// the path towards it goes without DF (the host can fragment it); one
// that fits, or any on a path as wide as the device, keeps DF.
func TestUDPNoDFOnNarrowPath(t *testing.T) {
	for _, tc := range []struct {
		path, size int
		df         bool
	}{{1400, 1450, false}, {1400, 1300, true}, {1500, 1450, true}} {
		h := newHarnessWith(t, testPolicy, nil, udpEcho(t, ""), nil, policy.Limits{}, func(c *Config) {
			c.PathMTU = func(netip.Addr, netip.Addr) int { return tc.path }
		})
		h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:80", make([]byte, tc.size)))
		p := h.next()
		ip, ok := p.NetworkLayer().(*layers.IPv4)
		if !ok || p.Layer(layers.LayerTypeUDP) == nil || p.ErrorLayer() != nil {
			t.Fatalf("path %d: want a UDP reply, got %v", tc.path, p)
		}
		if df := ip.Flags&layers.IPv4DontFragment != 0; df != tc.df {
			t.Errorf("path %d, %d bytes: DF %v, want %v", tc.path, tc.size, df, tc.df)
		}
		if ip.Checksum != ^checksum.Checksum(ip.Contents[:10], checksum.Checksum(ip.Contents[12:], 0)) {
			t.Errorf("path %d, %d bytes: header checksum wrong", tc.path, tc.size)
		}
	}
}

// TestPathMTUReported: how a reported path MTU combines with the route's,
// how low a report may take it, and when it ends.
func TestPathMTUReported(t *testing.T) {
	var logged []string
	var st Stats
	route := 1500
	c := newMSSClamp(func(netip.Addr, netip.Addr) int { return route }, 1500, &st, func(client netip.Addr, mtu int, from netip.Addr) {
		logged = append(logged, fmt.Sprintf("%s %d %s", client, mtu, from))
	})
	server, server6 := netip.MustParseAddr("192.0.2.1").AsSlice(), netip.MustParseAddr("2001:db8::1").AsSlice()
	router, router6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	a, b, a6 := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("fd00::2")
	mtu := func(client netip.Addr) int {
		s := server
		if client.Is6() {
			s = server6
		}
		return c.pathMTU(client.AsSlice(), s)
	}
	c.reported(a, 1400, router)
	c.reported(b, 100, router)    // below IPv4's floor
	c.reported(a6, 1000, router6) // below IPv6's minimum
	for _, tc := range []struct {
		client netip.Addr
		want   int
	}{{a, 1400}, {b, pathMTUMin4}, {a6, 1280}} {
		if got := mtu(tc.client); got != tc.want {
			t.Errorf("%s: path MTU %d, want %d", tc.client, got, tc.want)
		}
	}
	want := []string{"10.0.0.2 1400 10.0.0.1", "10.0.0.3 552 10.0.0.1", "fd00::2 1280 fd00::1"}
	if !slices.Equal(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
	// A narrower route wins over a report; the report outlives the
	// route's answer and ends on its own.
	c.paths[a] = pathMTU{mtu: route, expires: time.Now().Add(-time.Second), reported: 1400, reportedUntil: c.paths[a].reportedUntil}
	route = 1300
	if got := mtu(a); got != 1300 {
		t.Errorf("route 1300, report 1400: path MTU %d, want 1300", got)
	}
	route = 1500
	c.paths[a] = pathMTU{mtu: 1500, expires: time.Now().Add(-time.Second), reported: 1400, reportedUntil: c.paths[a].reportedUntil}
	if got := mtu(a); got != 1400 {
		t.Errorf("after the route's answer was renewed: path MTU %d, want the report's 1400", got)
	}
	p := c.paths[a]
	p.reportedUntil = time.Now().Add(-time.Second)
	c.paths[a] = p
	if got := mtu(a); got != 1500 {
		t.Errorf("after the report ended: path MTU %d, want the route's 1500", got)
	}
	// Once it has ended, a wider report is taken, and logged.
	c.reported(a, 1450, router)
	if got := mtu(a); got != 1450 {
		t.Errorf("a new report of 1450: path MTU %d", got)
	}
	// A narrower report replaces one in force without a log line.
	c.reported(a, 1350, router)
	if got := mtu(a); got != 1350 {
		t.Errorf("a narrower report of 1350: path MTU %d", got)
	}
	want = append(want, "10.0.0.2 1300 invalid IP", "10.0.0.2 1450 10.0.0.1") // the route of 1300, then the new report
	if !slices.Equal(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
}

// A report is taken only if the packet it quotes is one tunwall sent on a
// live flow: a datagram of a UDP session or an echo reply of an echo flow
// here (TCP in TestMSSClampedToReportedPathMTU); not one to another port
// or with another identifier, of another protocol, or cut short.
func TestTooBigReportNeedsLiveFlow(t *testing.T) {
	for _, tc := range []struct{ client, server string }{{"10.0.0.2", "192.0.2.1"}, {"fd00::2", "2001:db8::1"}} {
		t.Run(tc.client, func(t *testing.T) {
			ping := func(context.Context, netip.Addr) (EchoConn, error) {
				return &fakeEcho{alive: true, replies: make(chan [2]any, 4), closed: make(chan struct{})}, nil
			}
			h := newHarnessWith(t, testPolicy, nil, udpEcho(t, ""), ping, policy.Limits{})
			client, server := netip.MustParseAddr(tc.client), netip.MustParseAddr(tc.server)
			at := func(a netip.Addr, port uint16) string { return netip.AddrPortFrom(a, port).String() }
			h.send(udpPacket(t, at(client, 5000), at(server, 80), []byte("session")))
			h.next()
			h.send(echoRequestPacket(t, tc.client, tc.server, 7, 1, []byte("ping")))
			h.next()
			reply := func(id uint16) []byte {
				p := echoRequestPacket(t, tc.server, tc.client, id, 1, []byte("ping"))
				if client.Is4() {
					p[ipv4HeaderLen] = icmp4EchoReply
				} else {
					p[ipv6HeaderLen] = icmp6EchoReply
				}
				return p
			}
			request := echoRequestPacket(t, tc.server, tc.client, 7, 1, []byte("ping"))
			for _, q := range []struct {
				name   string
				quoted []byte
				live   bool
			}{
				{"the session's datagram", udpPacket(t, at(server, 80), at(client, 5000), []byte("session")), true},
				{"the echo flow's reply", reply(7), true},
				{"a datagram to another port", udpPacket(t, at(server, 80), at(client, 5001), []byte("session")), false},
				{"a datagram from another port", udpPacket(t, at(server, 8080), at(client, 5000), []byte("session")), false},
				{"a reply with another identifier", reply(8), false},
				{"an echo request", request, false},
				{"a TCP segment", tcpSegment(t, at(server, 80), at(client, 5000), layers.TCP{ACK: true}, nil), false},
				{"a datagram cut short", udpPacket(t, at(server, 80), at(client, 5000), nil)[:len(udpPacket(t, at(server, 80), at(client, 5000), nil))-5], false},
			} {
				if got := h.gw.icmp.sentOnLiveFlow(q.quoted); got != q.live {
					t.Errorf("%s: taken %v, want %v", q.name, got, q.live)
				}
			}
		})
	}
}
