package netstack

import (
	"context"
	"io"
	"net"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/policy"
)

func mustPolicy(t *testing.T, yaml string) *policy.Policy {
	t.Helper()
	cfg, err := policy.Parse("reload.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Policy
}

// TestReevaluateClosesRefusedFlows: after a policy change, Reevaluate
// ends the flows the new policy refuses (close reason "policy", the client
// gets a RST) and leaves the others running.
func TestReevaluateClosesRefusedFlows(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	go io.Copy(io.Discard, upPeer)
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	openTCP(t, h, "10.0.0.2:5000", "192.0.2.1:80")

	h.gw.SetPolicy(mustPolicy(t, "policy:\n  default: allow\n  rules:\n    - {name: no-web, action: deny, proto: tcp, ports: [80]}\n"))
	if n := h.gw.Reevaluate(); n != 1 {
		t.Fatalf("Reevaluate closed %d flows, want 1", n)
	}
	rst := h.nextTCP(t)
	if !rst.RST || rst.DstPort != 5000 {
		t.Fatalf("want a RST to the client, got %+v", rst)
	}
	waitFor(t, func() bool { return len(h.ev.closeList()) == 1 })
	if r := h.ev.closeList()[0].Reason; r != reasonPolicy {
		t.Errorf("close reason %q, want %q", r, reasonPolicy)
	}
	if h.gw.ActiveFlows() != 0 {
		t.Errorf("%d flows still active", h.gw.ActiveFlows())
	}
}

// TestReevaluateKeepsAllowedFlows: a flow the new policy still allows is
// not touched.
func TestReevaluateKeepsAllowedFlows(t *testing.T) {
	up, upPeer := net.Pipe()
	defer upPeer.Close()
	go io.Copy(io.Discard, upPeer)
	h := newHarness(t, func(context.Context, string, string) (net.Conn, error) { return up, nil }, nil, policy.Limits{})
	openTCP(t, h, "10.0.0.2:5000", "192.0.2.1:80")
	h.gw.SetPolicy(mustPolicy(t, "policy:\n  default: deny\n  rules:\n    - {name: web, action: allow, proto: tcp, ports: [80]}\n"))
	if n := h.gw.Reevaluate(); n != 0 || h.gw.ActiveFlows() != 1 {
		t.Fatalf("Reevaluate closed %d flows, %d active; want 0 and 1", n, h.gw.ActiveFlows())
	}
}

// TestSetPolicyForgetsRefusals: a UDP flow refused by the old policy is
// relayed after a policy that allows it, without waiting for the
// remembered refusal to expire.
func TestSetPolicyForgetsRefusals(t *testing.T) {
	h := newHarness(t, udpEcho(t, "re: "), nil, policy.Limits{})
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:81", []byte("one")))
	if p := h.next(); p.Layer(layers.LayerTypeICMPv4) == nil {
		t.Fatalf("want port unreachable from the old policy, got %v", p)
	}
	h.gw.SetPolicy(mustPolicy(t, "policy:\n  default: allow\n"))
	h.send(udpPacket(t, "10.0.0.2:5000", "192.0.2.1:81", []byte("two")))
	p := h.next()
	if u, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); !ok || string(u.Payload) != "re: two" {
		t.Fatalf("want the reply under the new policy, got %v", p)
	}
}

// openTCP completes a handshake for an allowed flow and waits until it is
// relayed.
func openTCP(t *testing.T, h *harness, src, dst string) {
	t.Helper()
	h.send(tcpSyn(t, src, dst))
	synAck := h.nextTCP(t)
	if !synAck.SYN || !synAck.ACK {
		t.Fatalf("want SYN-ACK, got %+v", synAck)
	}
	h.send(tcpAck(t, src, dst, 1001, synAck.Seq+1))
	waitFor(t, func() bool { return len(h.gw.flows.live()) == 1 })
}
