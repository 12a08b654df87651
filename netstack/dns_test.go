package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/internal/names"
	"github.com/tunwall/tunwall/policy"
)

const dnsPolicy = `
policy:
  default: allow
  rules:
    - {name: no-ads, action: reject, domains: ["*.ads.test", blocked.test]}
    - {name: no-ok-https, action: reject, proto: tcp, ports: [443], domains: [ok.test]}
`

// fakeDNS answers every A query with 192.0.2.1 and records how often it
// was asked.
type fakeDNS struct {
	mu    sync.Mutex
	asked []string
}

func (d *fakeDNS) dial(t *testing.T) DialFunc {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		b := make([]byte, 1500)
		for {
			n, a, err := pc.ReadFrom(b)
			if err != nil {
				return
			}
			q, err := names.ParseQuery(b[:n])
			if err != nil {
				continue
			}
			d.mu.Lock()
			d.asked = append(d.asked, q.Name)
			d.mu.Unlock()
			r := layers.DNS{ID: q.ID, QR: true, RA: true,
				Questions: []layers.DNSQuestion{{Name: []byte(q.Name), Type: q.Type, Class: layers.DNSClassIN}},
				Answers:   []layers.DNSResourceRecord{{Name: []byte(q.Name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 300, IP: net.IPv4(192, 0, 2, 1).To4()}}}
			buf := gopacket.NewSerializeBuffer()
			r.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true})
			pc.WriteTo(buf.Bytes(), a)
		}
	}()
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		if network != "udp" {
			return nil, net.UnknownNetworkError(network)
		}
		return net.Dial("udp", pc.LocalAddr().String())
	}
}

func (d *fakeDNS) names() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.asked...)
}

func dnsQuery(t testing.TB, src, name string) []byte {
	q := layers.DNS{ID: 77, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
	buf := gopacket.NewSerializeBuffer()
	if err := q.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatal(err)
	}
	return udpPacket(t, src, "192.0.2.53:53", buf.Bytes())
}

// nextDNS returns the next DNS message the gateway wrote to the client.
func (h *harness) nextDNS(t *testing.T) *layers.DNS {
	t.Helper()
	p := h.next()
	u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok || u.SrcPort != 53 {
		t.Fatalf("want a DNS answer from port 53, got %v", p)
	}
	var d layers.DNS
	if err := d.DecodeFromBytes(u.Payload, gopacket.NilDecodeFeedback); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestDNSBlockedNames: a query for a name a rule about names refuses is
// answered NXDOMAIN by tunwall and never reaches the server; other names
// are resolved by the server.
func TestDNSBlockedNames(t *testing.T) {
	srv := &fakeDNS{}
	h := newHarnessWith(t, dnsPolicy, nil, srv.dial(t), nil, policy.Limits{})
	h.send(dnsQuery(t, "10.0.0.2:5353", "x.ads.test"))
	if d := h.nextDNS(t); d.ResponseCode != layers.DNSResponseCodeNXDomain || d.ID != 77 || len(d.Answers) != 0 {
		t.Errorf("blocked name: rcode %v, %d answers", d.ResponseCode, len(d.Answers))
	}
	h.send(dnsQuery(t, "10.0.0.2:5353", "ok.test"))
	if d := h.nextDNS(t); d.ResponseCode != layers.DNSResponseCodeNoErr || len(d.Answers) != 1 {
		t.Errorf("allowed name: rcode %v, %d answers", d.ResponseCode, len(d.Answers))
	}
	if got := srv.names(); len(got) != 1 || got[0] != "ok.test" {
		t.Errorf("the server was asked %q, want only ok.test", got)
	}
	h.ev.mu.Lock()
	defer h.ev.mu.Unlock()
	if len(h.ev.names) != 1 || h.ev.names[0] != "x.ads.test no-ads" {
		t.Errorf("name events %q, want the blocked one", h.ev.names)
	}
}

// TestDNSNamesFlows: after ok.test resolved to 192.0.2.1 for a client, that
// client's flows to 192.0.2.1 carry the name (source dns) and rules with
// names judge them; another client's flows to the same address do not.
func TestDNSNamesFlows(t *testing.T) {
	srv := &fakeDNS{}
	h := newHarnessWith(t, dnsPolicy, nil, srv.dial(t), nil, policy.Limits{})
	h.send(dnsQuery(t, "10.0.0.2:5353", "ok.test"))
	h.nextDNS(t)
	// A rule naming ok.test could decide, so the flow's first bytes are
	// read for a name first; they are neither TLS nor HTTP, and the name
	// comes from DNS.
	sendFirst := func(src string) {
		h.send(tcpSyn(t, src, "192.0.2.1:443"))
		synAck := h.nextTCP(t)
		if !synAck.SYN || !synAck.ACK {
			t.Fatalf("want SYN-ACK, got %+v", synAck)
		}
		h.send(tcpAck(t, src, "192.0.2.1:443", 1001, synAck.Seq+1))
		h.send(tcpData(t, src, "192.0.2.1:443", 1001, synAck.Seq+1, []byte("\x00raw")))
		for seg := h.nextTCP(t); !seg.RST; seg = h.nextTCP(t) {
		}
	}
	sendFirst("10.0.0.2:6000")
	f, v, ok := h.ev.verdictFor("10.0.0.2:6000")
	if !ok || v.Rule != "no-ok-https" || f.Domain != "ok.test" || f.DomainSource != "dns" {
		t.Errorf("verdict %q domain %q source %q", v.Rule, f.Domain, f.DomainSource)
	}
	// Another client never asked: no name, no match (it is allowed; the
	// fake dialer does not do TCP, so it is reset after the dial).
	sendFirst("10.0.0.3:6000")
	if f, v, _ := h.ev.verdictFor("10.0.0.3:6000"); v.Rule != policy.DefaultRule || f.Domain != "" {
		t.Errorf("other client: verdict %q domain %q, want default and no name", v.Rule, f.Domain)
	}
}

func TestNameCacheBounds(t *testing.T) {
	c := newNameCache(16)
	now := timeZero()
	client := netip.MustParseAddr("10.0.0.2")
	for i := range 100 {
		c.put(client, "n.test", []names.Address{{Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), TTL: 1}}, now)
	}
	if len(c.entries) > 16 {
		t.Fatalf("%d entries in a cache of 16", len(c.entries))
	}
	c.put(client, "ttl.test", []names.Address{{Addr: netip.MustParseAddr("198.51.100.1"), TTL: 1}}, now)
	if _, ok := c.get(client, netip.MustParseAddr("198.51.100.1"), now.Add(minNameTTL-1)); !ok {
		t.Error("an answer with TTL 1 s was forgotten before the minimum")
	}
	if _, ok := c.get(client, netip.MustParseAddr("198.51.100.1"), now.Add(minNameTTL+1)); ok {
		t.Error("an expired answer was used")
	}
}

func timeZero() time.Time { return time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC) }

// tcpDNSUpstream returns a dialer whose TCP connections are answered like
// a DNS server over TCP (A 192.0.2.1 for every name), recording the names.
func (d *fakeDNS) tcpDial(t *testing.T) DialFunc {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		go func() {
			var buf []byte
			tmp := make([]byte, 4096)
			for {
				n, err := b.Read(tmp)
				if err != nil {
					return
				}
				buf = append(buf, tmp[:n]...)
				frames(&buf, func(msg, _ []byte) {
					q, err := names.ParseQuery(msg)
					if err != nil {
						return
					}
					d.mu.Lock()
					d.asked = append(d.asked, q.Name)
					d.mu.Unlock()
					r := layers.DNS{ID: q.ID, QR: true, Questions: []layers.DNSQuestion{{Name: []byte(q.Name), Type: q.Type, Class: layers.DNSClassIN}},
						Answers: []layers.DNSResourceRecord{{Name: []byte(q.Name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 300, IP: net.IPv4(192, 0, 2, 1).To4()}}}
					sb := gopacket.NewSerializeBuffer()
					r.SerializeTo(sb, gopacket.SerializeOptions{FixLengths: true})
					out := sb.Bytes()
					b.Write(append([]byte{byte(len(out) >> 8), byte(len(out))}, out...))
				})
			}
		}()
		return a, nil
	}
}

// framedQuery is a DNS query with its two-byte length, as sent over TCP.
func framedQuery(t *testing.T, name string) []byte {
	q := layers.DNS{ID: 99, RD: true, Questions: []layers.DNSQuestion{{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN}}}
	buf := gopacket.NewSerializeBuffer()
	if err := q.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	return append([]byte{byte(len(b) >> 8), byte(len(b))}, b...)
}

// TestDNSOverTCP: queries over TCP port 53 get the same treatment as over
// UDP: a blocked name is answered NXDOMAIN by tunwall, another goes to
// the server, and its answer names the address for the client's flows.
func TestDNSOverTCP(t *testing.T) {
	srv := &fakeDNS{}
	h := newHarnessWith(t, dnsPolicy, nil, srv.tcpDial(t), nil, policy.Limits{})
	const client, server = "10.0.0.2:7000", "192.0.2.53:53"
	h.send(tcpSyn(t, client, server))
	synAck := h.nextTCP(t)
	seq := synAck.Seq + 1
	h.send(tcpAck(t, client, server, 1001, seq))
	// answer reads the gateway's next data segment as one framed answer.
	answer := func() *layers.DNS {
		t.Helper()
		for {
			seg := h.nextTCP(t)
			if seg.RST {
				t.Fatal("reset")
			}
			if len(seg.Payload) == 0 {
				continue
			}
			p := seg.Payload
			if len(p) < 2 || int(p[0])<<8|int(p[1]) != len(p)-2 {
				t.Fatalf("not one framed message: %x", p)
			}
			var d layers.DNS
			if err := d.DecodeFromBytes(p[2:], gopacket.NilDecodeFeedback); err != nil {
				t.Fatal(err)
			}
			return &d
		}
	}
	blocked := framedQuery(t, "x.ads.test")
	h.send(tcpData(t, client, server, 1001, seq, blocked))
	if d := answer(); d.ResponseCode != layers.DNSResponseCodeNXDomain {
		t.Errorf("blocked name over TCP: rcode %v", d.ResponseCode)
	}
	ok := framedQuery(t, "ok.test")
	h.send(tcpData(t, client, server, 1001+uint32(len(blocked)), seq, ok))
	if d := answer(); d.ResponseCode != layers.DNSResponseCodeNoErr || len(d.Answers) != 1 {
		t.Errorf("allowed name over TCP: rcode %v, %d answers", d.ResponseCode, len(d.Answers))
	}
	if got := srv.names(); len(got) != 1 || got[0] != "ok.test" {
		t.Errorf("the server was asked %q, want only ok.test", got)
	}
	if name, found := h.gw.names.get(netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("192.0.2.1"), time.Now()); !found || name != "ok.test" {
		t.Errorf("cache after the TCP answer: %q %v", name, found)
	}
}

// TestDNSUpstream: with dns.upstream set, DNS flows (UDP and TCP) are
// dialed there; other flows to their own destination.
func TestDNSUpstream(t *testing.T) {
	dialed := make(chan string, 4)
	dial := func(_ context.Context, network, addr string) (net.Conn, error) {
		dialed <- network + " " + addr
		return nil, errors.New("recorded only")
	}
	h := newHarnessWith(t, dnsPolicy, nil, dial, nil, policy.Limits{})
	h.gw.cfg.DNS.Upstream = netip.MustParseAddrPort("192.0.2.99:53")
	h.send(dnsQuery(t, "10.0.0.2:5353", "ok.test"))
	h.send(udpPacket(t, "10.0.0.2:5354", "192.0.2.1:80", []byte("x")))
	h.send(tcpSyn(t, "10.0.0.2:7000", "192.0.2.53:53"))
	want := map[string]bool{"udp 192.0.2.99:53": true, "udp 192.0.2.1:80": true}
	for range 2 {
		if got := <-dialed; !want[got] {
			t.Errorf("dialed %q", got)
		}
	}
	// The TCP one is judged after its first bytes (a name rule could match).
	synAck := h.nextTCPWhere(t, func(s *layers.TCP) bool { return s.SYN && s.ACK })
	h.send(tcpAck(t, "10.0.0.2:7000", "192.0.2.53:53", 1001, synAck.Seq+1))
	h.send(tcpData(t, "10.0.0.2:7000", "192.0.2.53:53", 1001, synAck.Seq+1, framedQuery(t, "ok.test")))
	if got := <-dialed; got != "tcp 192.0.2.99:53" {
		t.Errorf("dialed %q for DNS over TCP", got)
	}
}

// nextTCPWhere skips written packets until a TCP segment that fits.
func (h *harness) nextTCPWhere(t *testing.T, fits func(*layers.TCP) bool) *layers.TCP {
	t.Helper()
	return h.nextTCPPacketWhere(t, fits).Layer(layers.LayerTypeTCP).(*layers.TCP)
}

// nextTCPPacketWhere is nextTCPWhere returning the whole packet.
func (h *harness) nextTCPPacketWhere(t *testing.T, fits func(*layers.TCP) bool) gopacket.Packet {
	t.Helper()
	for {
		p := h.next()
		if s, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && fits(s) {
			return p
		}
	}
}
