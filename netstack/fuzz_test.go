package netstack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/rs/zerolog"
	"github.com/tunwall/tunwall/policy"
)

// FuzzInspect runs arbitrary bytes through everything the endpoint does to
// a packet from the device before gVisor sees it: length checks, checksum
// verification, the MSS clamp and the ICMP echo classifier. None of it
// may panic.
func FuzzInspect(f *testing.F) {
	f.Add(tcpSyn(f, "10.0.0.2:5000", "192.0.2.1:80"))
	f.Add(udpPacket(f, "[fd00::2]:5000", "[2001:db8::1]:53", []byte("q")))
	f.Add(echoRequestPacket(f, "10.0.0.2", "192.0.2.1", 1, 2, []byte("ping")))
	f.Add(echoRequestPacket(f, "fd00::2", "2001:db8::1", 1, 2, []byte("ping6")))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 44, 64})
	f.Add(tcpSegment(f, "10.0.0.2:5000", "192.0.2.1:80", layers.TCP{SYN: true, Seq: 1, Window: 65535,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil))
	var st Stats
	dec := newEchoDecoder()
	clamp := newMSSClamp(func(netip.Addr, netip.Addr) int { return 1400 }, 1500, &st, func(netip.Addr, int, netip.Addr) {})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		if _, ok := st.check(pkt); !ok {
			return
		}
		_ = checksumsOK(pkt)
		if src, dst, seg, ok := tcpSYN(pkt); ok {
			clamp.clamp(src, dst, seg)
		}
		var req echoRequest
		if dec.classify(pkt, &req) == isEcho {
			_ = echoReply(req.src, req.dst, req.id, req.seq, req.payload)
			_ = icmpError(req.raw, req.src, req.dst, 3, 13)
		}
	})
}

// fuzzPolicy lets everything through but port 81, which the liveness probe
// uses: mutated packets reach every handler, not only the refusals.
const fuzzPolicy = `
policy:
  default: allow
  rules:
    - {name: probe, action: reject, proto: tcp, ports: [81]}
`

// FuzzGateway sends arbitrary packets, their checksums made right so they
// get past the endpoint's check, into a running gateway: the TCP, UDP and
// ICMP handlers, the DNS filter and gVisor behind them. UDP sessions reach
// a loopback echo; TCP and ping upstreams fail. Nothing may panic, and
// after every packet the gateway must still answer a probe.
func FuzzGateway(f *testing.F) {
	f.Add(tcpSyn(f, "10.0.0.2:5000", "192.0.2.1:80"))
	f.Add(tcpData(f, "10.0.0.2:5000", "192.0.2.1:80", 1001, 1, []byte("GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")))
	f.Add(dnsQuery(f, "10.0.0.2:5000", "a.test"))
	f.Add(tooBigReport(f, "10.0.0.1", "10.0.0.2:5000", "192.0.2.1:80", 1400))
	f.Add(tooBigReport(f, "fd00::1", "[fd00::2]:5000", "[2001:db8::1]:80", 1400))
	f.Add(udpPacket(f, "[fd00::2]:5000", "[2001:db8::1]:53", []byte("q")))
	f.Add(echoRequestPacket(f, "10.0.0.2", "192.0.2.1", 1, 2, []byte("ping")))
	f.Add(echoRequestPacket(f, "fd00::2", "2001:db8::1", 1, 2, []byte("ping6")))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 44, 64})
	f.Add(tcpSegment(f, "10.0.0.2:5000", "192.0.2.1:80", layers.TCP{SYN: true, Seq: 1, Window: 65535,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil))
	f.Add(tcpSegment(f, "10.0.0.2:5000", "192.0.2.1:80", layers.TCP{SYN: true, Seq: 1, Window: 65535,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}, nil))
	echo := udpEcho(f, "")
	cfg, err := policy.Parse("fuzz.yaml", []byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	dev := newFakeDevice()
	gw, err := New(Config{
		Device: dev, MTU: 1500, Policy: cfg.Policy, Events: &recorder{}, Log: zerolog.Nop(),
		Limits: policy.Limits{UDPIdle: 100 * time.Millisecond, MaxUDPSessions: 64, MaxFlows: 256, MaxPendingTCP: 64},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if network != "udp" {
				return nil, errors.New("no TCP upstream in this test")
			}
			return echo(ctx, network, addr)
		},
		Ping: func(context.Context, netip.Addr) (EchoConn, error) {
			return nil, errors.New("no ping upstream in this test")
		},
		PathMTU: func(netip.Addr, netip.Addr) int { return 1400 }, // every SYN's MSS is clamped
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		gw.Close()
		dev.Close()
		gw.Wait()
	})
	var probe uint16
	f.Fuzz(func(t *testing.T, pkt []byte) {
		pkt = bytes.Clone(pkt)
		fixChecksums(pkt)
		dev.in <- pkt
		// The device is read in order: the probe's RST proves the packet
		// was taken in, and that the gateway still judges new flows.
		probe++
		port := 1024 + probe%60000
		dev.in <- tcpSyn(t, fmt.Sprintf("10.255.0.1:%d", port), "192.0.2.9:81")
		deadline := time.After(5 * time.Second)
		for {
			select {
			case b := <-dev.out:
				p := gopacket.NewPacket(b, layers.LayerTypeIPv4, gopacket.Lazy)
				if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && tcp.RST && uint16(tcp.DstPort) == port {
					return
				}
			case <-deadline:
				t.Fatal("the gateway stopped answering")
			}
		}
	})
}
