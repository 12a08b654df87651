package netstack

import (
	"bytes"
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/tunwall/tunwall/policy"
)

// ipv6Packet is an IPv6 packet from 2001:db8::1 to fd00::2 with the given
// next header, hop limit 61, flow label 0x12345 and payload.
func ipv6Packet(next byte, payload []byte) []byte {
	p := make([]byte, ipv6HeaderLen, ipv6HeaderLen+len(payload))
	p[0], p[1], p[2], p[3] = 0x60, 0x01, 0x23, 0x45
	binary.BigEndian.PutUint16(p[4:], uint16(len(payload)))
	p[6], p[7] = next, 61
	src, dst := netip.MustParseAddr("2001:db8::1").As16(), netip.MustParseAddr("fd00::2").As16()
	copy(p[8:], src[:])
	copy(p[24:], dst[:])
	return append(p, payload...)
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// reassemble checks that frags are all the fragments of one IPv6 packet,
// each at most mtu bytes, with the fields a receiver relies on, and
// returns the packet they make.
func reassemble(t *testing.T, frags [][]byte, mtu int) []byte {
	t.Helper()
	var first []byte
	data := map[int][]byte{}
	total := -1
	for i, f := range frags {
		if len(f) > mtu {
			t.Fatalf("fragment %d: %d bytes, path MTU %d", i, len(f), mtu)
		}
		if len(f) < ipv6HeaderLen+ip6FragHdrLen || f[6] != ip6Fragment {
			t.Fatalf("fragment %d: not a fragment: % x", i, f[:min(len(f), 48)])
		}
		if n := int(binary.BigEndian.Uint16(f[4:])); n != len(f)-ipv6HeaderLen {
			t.Fatalf("fragment %d: payload length %d, carries %d", i, n, len(f)-ipv6HeaderLen)
		}
		if first == nil {
			first = f
		} else if !bytes.Equal(f[:4], first[:4]) || !bytes.Equal(f[7:40], first[7:40]) ||
			f[40] != first[40] || !bytes.Equal(f[44:48], first[44:48]) {
			t.Fatalf("fragment %d: header or identification differs from the first's", i)
		}
		off, more := int(binary.BigEndian.Uint16(f[42:])&^7), f[43]&1 == 1
		if f[43]&6 != 0 || f[41] != 0 {
			t.Fatalf("fragment %d: reserved bits set", i)
		}
		if more && (len(f)-48)%8 != 0 {
			t.Fatalf("fragment %d: %d bytes of data with more to come, not a multiple of 8", i, len(f)-48)
		}
		if !more {
			if total >= 0 {
				t.Fatal("two last fragments")
			}
			total = off + len(f) - 48
		}
		if _, dup := data[off]; dup {
			t.Fatalf("two fragments at offset %d", off)
		}
		data[off] = f[48:]
	}
	if total < 0 {
		t.Fatal("no last fragment")
	}
	var out []byte
	for len(out) < total {
		d, ok := data[len(out)]
		if !ok {
			t.Fatalf("nothing at offset %d of %d", len(out), total)
		}
		delete(data, len(out))
		out = append(out, d...)
	}
	if len(out) != total || len(data) != 0 {
		t.Fatalf("fragments overlap: %d bytes for %d, %d left over", len(out), total, len(data))
	}
	whole := append([]byte(nil), first[:ipv6HeaderLen]...)
	binary.BigEndian.PutUint16(whole[4:], uint16(total))
	whole[6] = first[40]
	return append(whole, out...)
}

func TestFragmentIPv6(t *testing.T) {
	for _, tc := range []struct {
		name     string
		size     int // payload bytes after the IPv6 header
		mtu      int
		wantFrag int
	}{
		{"just over", 1361, 1400, 2},
		{"datagram over a 1400 path", 1418, 1400, 2},
		{"exact multiple", 2 * 1352, 1400, 2},
		{"minimum MTU", 3000, 1280, 3},
		{"largest", 65535, 1280, 54},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := ipv6Packet(protoUDP, pattern(tc.size))
			frags := fragmentIPv6(pkt, tc.mtu, 0xdeadbeef)
			if len(frags) != tc.wantFrag {
				t.Fatalf("%d fragments, want %d", len(frags), tc.wantFrag)
			}
			if id := binary.BigEndian.Uint32(frags[0][44:]); id != 0xdeadbeef {
				t.Errorf("identification %#x, want 0xdeadbeef", id)
			}
			if got := reassemble(t, frags, tc.mtu); !bytes.Equal(got, pkt) {
				t.Errorf("reassembled packet differs from the original")
			}
		})
	}
}

// TestFragmentIPv6Fragment: a fragment the stack made of a datagram
// larger than the device is split further into fragments of the same
// packet, which reassembles whole.
func TestFragmentIPv6Fragment(t *testing.T) {
	pkt := ipv6Packet(protoUDP, pattern(4000))
	wide := fragmentIPv6(pkt, 1500, 77) // as the stack fragments for the device
	if len(wide) != 3 {
		t.Fatalf("%d fragments at 1500, want 3", len(wide))
	}
	var narrow [][]byte
	for i, f := range wide {
		split := fragmentIPv6(f, 1280, 99)
		if want := 2 * (len(f) / 1280); len(split) != want { // the last, 1152 bytes, fits
			t.Fatalf("fragment %d (%d bytes) split into %d, want %d", i, len(f), len(split), want)
		}
		if split == nil {
			split = [][]byte{f}
		}
		narrow = append(narrow, split...)
	}
	if got := reassemble(t, narrow, 1280); !bytes.Equal(got, pkt) {
		t.Errorf("reassembled packet differs from the original")
	}
	if id := binary.BigEndian.Uint32(narrow[0][44:]); id != 77 {
		t.Errorf("identification %d, want the stack's 77", id)
	}
}

func TestFragmentIPv6LeavesAlone(t *testing.T) {
	long := ipv6Packet(protoUDP, pattern(1400))
	badLen := append([]byte(nil), long...)
	binary.BigEndian.PutUint16(badLen[4:], 1500)
	lastOffset := ipv6Packet(ip6Fragment, append([]byte{protoUDP, 0, 0xff, 0xf8, 0, 0, 0, 1}, pattern(1400)...))
	for _, tc := range []struct {
		name string
		pkt  []byte
		mtu  int
	}{
		{"fits", long, 1440},
		{"hop-by-hop options", ipv6Packet(ip6HopByHop, pattern(1400)), 1280},
		{"routing header", ipv6Packet(ip6Routing, pattern(1400)), 1280},
		{"destination options", ipv6Packet(ip6DestOpts, pattern(1400)), 1280},
		{"payload length beyond the packet", badLen, 1280},
		{"truncated fragment header", ipv6Packet(ip6Fragment, []byte{17, 0, 0})[:43], 40},
		{"mtu below a fragment's headers and 8 bytes", long, 55},
		{"offset past 64 KiB", lastOffset, 1280},
		{"IPv4", append([]byte{0x45}, long[1:]...), 1280},
	} {
		if frags := fragmentIPv6(tc.pkt, tc.mtu, 1); frags != nil {
			t.Errorf("%s: split into %d fragments, want it left whole", tc.name, len(frags))
		}
	}
	// Bytes after the payload length (padding) are not data.
	padded := append(append([]byte(nil), long...), 0xee, 0xee)
	if got := reassemble(t, fragmentIPv6(padded, 1280, 1), 1280); !bytes.Equal(got, long) {
		t.Error("padding after the payload was sent as data")
	}
}

// nextRaw returns the next packet the gateway wrote, as bytes.
func (h *harness) nextRaw() []byte {
	h.t.Helper()
	select {
	case b := <-h.dev.out:
		return b
	case <-time.After(5 * time.Second):
		h.t.Fatal("gateway wrote nothing")
		return nil
	}
}

// fragmentsOf reads what the gateway writes until a packet completes the
// one being fragmented (or a whole packet comes) and returns it
// reassembled, with the number of packets it came in.
func (h *harness) fragmentsOf(mtu int) (gopacket.Packet, int) {
	h.t.Helper()
	var frags [][]byte
	for {
		p := h.nextRaw()
		if len(p) > mtu {
			h.t.Fatalf("a %d-byte packet on a %d path", len(p), mtu)
		}
		if p[0]>>4 != 6 || p[6] != ip6Fragment {
			if frags != nil {
				h.t.Fatalf("a whole packet among fragments")
			}
			return gopacket.NewPacket(p, layers.LayerTypeIPv6, gopacket.Default), 1
		}
		frags = append(frags, p)
		var have, total int
		total = -1
		for _, f := range frags {
			have += len(f) - 48
			if f[43]&1 == 0 {
				total = int(binary.BigEndian.Uint16(f[42:])&^7) + len(f) - 48
			}
		}
		if have == total {
			whole := reassemble(h.t, frags, mtu)
			return gopacket.NewPacket(whole, layers.LayerTypeIPv6, gopacket.Default), len(frags)
		}
	}
}

// TestIPv6FragmentedOnNarrowPath: with the path towards an IPv6 client
// narrower than the device, UDP datagrams (the stack's, whole or already
// fragmented for the device) and echo replies (tunwall's own) that do not
// fit it reach the client in fragments that do; with a wide path they go
// as the stack sent them.
func TestIPv6FragmentedOnNarrowPath(t *testing.T) {
	for _, tc := range []struct {
		name    string
		path    int
		size    int // UDP payload the client sends
		packets int // what the echoed datagram arrives in
		splits  int // packets of it tunwall fragmented
	}{
		{"fits the device, not the path", 1280, 1400, 2, 1},
		// The stack sends 3 fragments (1496, 1496 and 160 bytes); the
		// first two are split in 2 each.
		{"larger than the device", 1280, 3000, 5, 2},
		{"wide path", 1500, 1400, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ping := func(context.Context, netip.Addr) (EchoConn, error) {
				return &fakeEcho{alive: true, replies: make(chan [2]any, 4), closed: make(chan struct{})}, nil
			}
			h := newHarnessWith(t, testPolicy, nil, udpEcho(t, ""), ping, policy.Limits{}, func(c *Config) {
				c.PathMTU = func(netip.Addr, netip.Addr) int { return tc.path }
			})
			msg := pattern(tc.size)
			h.send(udpPacket(t, "[fd00::2]:5000", "[2001:db8::1]:80", msg))
			p, n := h.fragmentsOf(tc.path)
			udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			if !ok || udp.DstPort != 5000 || !bytes.Equal(udp.Payload, msg) || p.ErrorLayer() != nil {
				t.Fatalf("want the %d-byte echo to port 5000, got %v", len(msg), p)
			}
			if n != tc.packets {
				t.Errorf("echo came in %d packets, want %d", n, tc.packets)
			}

			payload := pattern(1300)
			h.send(echoRequestPacket(t, "fd00::2", "2001:db8::1", 7, 1, payload))
			p, n = h.fragmentsOf(tc.path)
			e6, ok := p.Layer(layers.LayerTypeICMPv6Echo).(*layers.ICMPv6Echo)
			if !ok || e6.SeqNumber != 1 || p.ErrorLayer() != nil ||
				!bytes.Equal(p.Layer(layers.LayerTypeICMPv6).LayerPayload()[4:], payload) {
				t.Fatalf("want the echo reply, got %v", p)
			}
			want, split := 1, tc.splits // 1348 bytes: split on a 1280 path
			if tc.path < 1348 {
				want, split = 2, split+1
			}
			if n != want {
				t.Errorf("echo reply came in %d packets, want %d", n, want)
			}
			if got := h.gw.stats.Fragmented.Load(); got != uint64(split) {
				t.Errorf("ipv6_fragmented %d, want %d", got, split)
			}
		})
	}
}

// FuzzFragmentIPv6: whatever the packet and MTU, fragmentIPv6 does not
// panic, and fragments it returns of a whole packet are each at most mtu
// bytes and reassemble to that packet.
func FuzzFragmentIPv6(f *testing.F) {
	f.Add(ipv6Packet(protoUDP, pattern(1400)), 1280)
	f.Add(ipv6Packet(ip6Fragment, append([]byte{protoUDP, 0, 0x05, 0xa9, 0, 0, 0, 9}, pattern(1448)...)), 1400)
	f.Add(ipv6Packet(protoICMPv6, pattern(60)), 60)
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int) {
		if mtu < 0 || mtu > 1<<17 {
			return
		}
		frags := fragmentIPv6(pkt, mtu, 5)
		if frags == nil || pkt[6] == ip6Fragment {
			for _, fr := range frags {
				if len(fr) > mtu {
					t.Fatalf("%d-byte fragment for mtu %d", len(fr), mtu)
				}
			}
			return
		}
		whole := pkt[:ipv6HeaderLen+int(binary.BigEndian.Uint16(pkt[4:]))]
		if got := reassemble(t, frags, mtu); !bytes.Equal(got, whole) {
			t.Fatal("fragments do not reassemble to the packet")
		}
	})
}
