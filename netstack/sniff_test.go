package netstack

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunwall/tunwall/policy"
)

const sniffPolicy = `
policy:
  default: allow
  rules:
    - {name: no-blocked, action: reject, proto: tcp, ports: [443, 80], domains: [blocked.test]}
`

// clientHello captures the first bytes a TLS client sends for serverName.
func clientHello(t *testing.T, serverName string) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{ServerName: serverName}).Handshake()
	buf := make([]byte, 16<<10)
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

// sniffHarness runs sniffPolicy with a dialer that counts dials and hands
// the test the upstream end.
func sniffHarness(t *testing.T) (*harness, *atomic.Int32, chan net.Conn) {
	var dials atomic.Int32
	ups := make(chan net.Conn, 4)
	dial := func(context.Context, string, string) (net.Conn, error) {
		dials.Add(1)
		a, b := net.Pipe()
		ups <- b
		t.Cleanup(func() { b.Close() })
		return a, nil
	}
	return newHarnessWith(t, sniffPolicy, nil, dial, nil, policy.Limits{}), &dials, ups
}

// opened completes a handshake on a flow that is judged by its name: the
// SYN-ACK comes before any dial.
func opened(t *testing.T, h *harness, dials *atomic.Int32, src, dst string) uint32 {
	t.Helper()
	h.send(tcpSyn(t, src, dst))
	synAck := h.nextTCP(t)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	if n := dials.Load(); n != 0 {
		t.Fatalf("dialed %d times before the name was known", n)
	}
	h.send(tcpAck(t, src, dst, 1001, synAck.Seq+1))
	return synAck.Seq + 1
}

func TestSNIRefused(t *testing.T) {
	h, dials, _ := sniffHarness(t)
	seq := opened(t, h, dials, "10.0.0.2:5000", "192.0.2.1:443")
	h.send(tcpData(t, "10.0.0.2:5000", "192.0.2.1:443", 1001, seq, clientHello(t, "Blocked.Test")))
	for {
		seg := h.nextTCP(t)
		if seg.RST {
			break
		}
		if len(seg.Payload) > 0 {
			t.Fatalf("data from a refused flow: %+v", seg)
		}
	}
	f, v, ok := h.ev.verdictFor("10.0.0.2:5000")
	if !ok || v.Rule != "no-blocked" || f.Domain != "blocked.test" || f.DomainSource != "sni" {
		t.Errorf("verdict %q domain %q source %q", v.Rule, f.Domain, f.DomainSource)
	}
	if dials.Load() != 0 {
		t.Error("a refused flow was dialed")
	}
	waitFor(t, func() bool { return h.gw.ActiveFlows() == 0 })
}

func TestSNIAllowedPassesTheHello(t *testing.T) {
	h, dials, ups := sniffHarness(t)
	seq := opened(t, h, dials, "10.0.0.2:5001", "192.0.2.1:443")
	hello := clientHello(t, "ok.test")
	h.send(tcpData(t, "10.0.0.2:5001", "192.0.2.1:443", 1001, seq, hello))
	up := <-ups
	up.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(hello))
	if _, err := io.ReadFull(up, got); err != nil || string(got) != string(hello) {
		t.Fatalf("upstream got %d bytes (%v), want the ClientHello", len(got), err)
	}
	f, v, _ := h.ev.verdictFor("10.0.0.2:5001")
	if v.Rule != policy.DefaultRule || f.Domain != "ok.test" || f.DomainSource != "sni" {
		t.Errorf("verdict %q domain %q source %q", v.Rule, f.Domain, f.DomainSource)
	}
}

func TestHostRefused(t *testing.T) {
	h, dials, _ := sniffHarness(t)
	seq := opened(t, h, dials, "10.0.0.2:5002", "192.0.2.1:80")
	h.send(tcpData(t, "10.0.0.2:5002", "192.0.2.1:80", 1001, seq, []byte("GET / HTTP/1.1\r\nHost: blocked.test\r\n\r\n")))
	for seg := h.nextTCP(t); !seg.RST; seg = h.nextTCP(t) {
	}
	if f, v, _ := h.ev.verdictFor("10.0.0.2:5002"); v.Rule != "no-blocked" || f.DomainSource != "host" {
		t.Errorf("verdict %q source %q", v.Rule, f.DomainSource)
	}
}

// A flow no rule about names can match is dialed on its SYN, as always.
func TestNoNameNoWait(t *testing.T) {
	h, dials, _ := sniffHarness(t)
	h.send(tcpSyn(t, "10.0.0.2:5003", "192.0.2.1:22"))
	h.nextTCP(t)
	if dials.Load() != 1 {
		t.Errorf("%d dials before the SYN-ACK, want 1", dials.Load())
	}
}
