package netstack

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

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
		c := newMSSClamp(func(netip.Addr, netip.Addr) int { return 1400 }, 1500, &st, func(netip.Addr, int) {})
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
	}, 1500, &st, func(client netip.Addr, _ int) { logged = append(logged, client) })
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
			up, upPeer := net.Pipe()
			dial := func(context.Context, string, string) (net.Conn, error) { return up, nil }
			h := newHarnessWith(t, testPolicy, nil, dial, nil, policy.Limits{}, func(c *Config) {
				c.PathMTU = func(netip.Addr, netip.Addr) int { return tc.path }
			})
			h.send(tcpSegment(t, tc.client, tc.server, layers.TCP{SYN: true, Seq: 1000, Window: 65535,
				Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil))
			synAck := h.next().Layer(layers.LayerTypeTCP).(*layers.TCP)
			if !synAck.SYN || !synAck.ACK {
				t.Fatalf("want SYN-ACK, got %+v", synAck)
			}
			h.send(tcpAck(t, tc.client, tc.server, 1001, synAck.Seq+1))
			go func() {
				upPeer.Write(make([]byte, 3*1460))
				io.Copy(io.Discard, upPeer)
			}()
			p := h.next()
			seg := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			if len(seg.Payload) != tc.want {
				t.Fatalf("first data segment carries %d bytes, want %d", len(seg.Payload), tc.want)
			}
			if n := len(p.Data()); n > tc.path {
				t.Fatalf("packet of %d bytes on a path of %d", n, tc.path)
			}
			upPeer.Close()
		})
	}
}

// TestUDPNoDFOnNarrowPath: a UDP session to an IPv4 client whose path is
// narrower than the device sends its datagrams without DF (the host can
// fragment them); to a client on a path as wide as the device, with DF
// as before.
func TestUDPNoDFOnNarrowPath(t *testing.T) {
	for _, tc := range []struct {
		path int
		df   bool
	}{{1400, false}, {1500, true}} {
		h := newHarnessWith(t, testPolicy, nil, udpEcho(t, "re: "), nil, policy.Limits{}, func(c *Config) {
			c.PathMTU = func(netip.Addr, netip.Addr) int { return tc.path }
		})
		h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:80", []byte("ping")))
		p := h.next()
		ip, ok := p.NetworkLayer().(*layers.IPv4)
		if !ok || p.Layer(layers.LayerTypeUDP) == nil {
			t.Fatalf("path %d: want a UDP reply, got %v", tc.path, p)
		}
		if df := ip.Flags&layers.IPv4DontFragment != 0; df != tc.df {
			t.Errorf("path %d: DF %v, want %v", tc.path, df, tc.df)
		}
	}
}
