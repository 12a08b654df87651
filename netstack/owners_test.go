package netstack

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/policy"
)

// fakeOwners treats 10.0.0.0/24 as this machine. A socket's owner is
// decided by its source port (for ICMP: the echo identifier): 5001 and
// 7 belong to uid 1001, anything else to uid 1002. Lookups of the
// protocols in gate wait until the gate is opened.
type fakeOwners struct {
	gate   chan struct{}
	gated  map[policy.Proto]bool
	mu     sync.Mutex
	looked []netip.AddrPort // sources looked up, in order
}

func newFakeOwners(gated ...policy.Proto) *fakeOwners {
	o := &fakeOwners{gate: make(chan struct{}), gated: map[policy.Proto]bool{}}
	for _, p := range gated {
		o.gated[p] = true
	}
	return o
}

func (o *fakeOwners) Local(a netip.Addr) bool {
	return netip.MustParsePrefix("10.0.0.0/24").Contains(a)
}

func (o *fakeOwners) Lookup(p policy.Proto, src, dst netip.AddrPort) (policy.Owner, bool) {
	if o.gated[p] {
		<-o.gate
	}
	o.mu.Lock()
	o.looked = append(o.looked, src)
	o.mu.Unlock()
	uid := uint32(1002)
	if src.Port() == 5001 || src.Port() == 7 {
		uid = 1001
	}
	return policy.Owner{UID: uid, PID: int(uid) + 1, Exe: "/usr/bin/app"}, true
}

func (o *fakeOwners) lookups() []netip.AddrPort {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]netip.AddrPort(nil), o.looked...)
}

// pipeDial accepts every TCP dial with one end of a pipe, keeping the
// other end open until the test ends.
func pipeDial(t *testing.T) DialFunc {
	var mu sync.Mutex
	var peers []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range peers {
			p.Close()
		}
	})
	return func(context.Context, string, string) (net.Conn, error) {
		a, b := net.Pipe()
		mu.Lock()
		peers = append(peers, b)
		mu.Unlock()
		return a, nil
	}
}

const ownerPolicy = `
policy:
  default: deny
  rules:
    - {name: refuse, action: reject, proto: [tcp, udp], ports: [81]}
    - {name: dns, action: allow, proto: udp, ports: [53]}
    - {name: alice-web, action: allow, users: [1001], proto: tcp, ports: [80]}
    - {name: web-refused, action: reject, proto: tcp, ports: [80]}
    - {name: alice-udp, action: allow, users: [1001], proto: udp}
    - {name: udp-refused, action: reject, proto: udp}
    - {name: alice-ping, action: allow, users: [1001], proto: icmp}
    - {name: ping-refused, action: reject, proto: icmp}
`

// A flow whose verdict depends on its owner is held, without any answer,
// until the lookup is done, and then judged by it: uid 1001 is let
// through, uid 1002 refused. A flow from another host is judged at once
// and never looked up.
func TestOwnerDecidesHeldFlows(t *testing.T) {
	owners := newFakeOwners(policy.TCP)
	h := newHarnessWith(t, ownerPolicy, owners, pipeDial(t), nil, policy.Limits{})

	h.send(tcpSyn(t, "10.0.0.2:5001", "192.0.2.1:80"))
	h.send(tcpSyn(t, "10.0.0.2:5001", "192.0.2.1:80")) // retransmission while held
	h.send(tcpSyn(t, "10.0.0.2:5002", "192.0.2.1:80"))
	h.send(tcpSyn(t, "10.9.0.2:5001", "192.0.2.1:80")) // another host
	tcp := h.nextTCP(t)
	if !tcp.RST || tcp.DstPort != 5001 {
		t.Fatalf("the other host's flow: want its RST at once, got %+v", tcp)
	}
	h.nothingBefore("10.0.0.2") // both local SYNs wait for their owner
	if _, _, ok := h.ev.verdictFor("10.0.0.2:5001"); ok {
		t.Fatal("a verdict was logged before the owner was known")
	}

	close(owners.gate)
	got := map[uint16]*layers.TCP{}
	for range 2 {
		tcp := h.nextTCP(t)
		got[uint16(tcp.DstPort)] = tcp
	}
	if a := got[5001]; a == nil || !a.SYN || !a.ACK {
		t.Errorf("uid 1001: want SYN-ACK, got %+v", a)
	}
	if b := got[5002]; b == nil || !b.RST {
		t.Errorf("uid 1002: want RST, got %+v", b)
	}
	for src, want := range map[string]string{"10.0.0.2:5001": "alice-web", "10.0.0.2:5002": "web-refused"} {
		f, v, ok := h.ev.verdictFor(src)
		if !ok || v.Rule != want || f.Owner == nil {
			t.Errorf("%s: verdict %q owner %+v (logged %v), want %q with an owner", src, v.Rule, f.Owner, ok, want)
		}
	}
	if f, v, _ := h.ev.verdictFor("10.9.0.2:5001"); v.Rule != "web-refused" || f.Owner != nil {
		t.Errorf("other host: verdict %q owner %+v, want web-refused without owner", v.Rule, f.Owner)
	}
	for _, src := range owners.lookups() {
		if src.Addr() == netip.MustParseAddr("10.9.0.2") {
			t.Errorf("looked up a flow from another host: %v", src)
		}
	}
	// The marker's verdict (nothingBefore) is written once its owner lookup
	// for the log is done, which may be after the packets above.
	waitFor(t, func() bool { return len(h.ev.verdictList()) >= 4 })
	if n := len(h.ev.verdictList()); n != 4 {
		t.Errorf("%d verdicts, want 4: the retransmitted SYN is not judged again", n)
	}
}

// A flow whose verdict does not depend on its owner goes ahead while the
// lookup runs; the verdict event waits for the owner, and the close event
// carries it too.
func TestOwnerLookupDoesNotDelayOtherFlows(t *testing.T) {
	owners := newFakeOwners(policy.UDP)
	h := newHarnessWith(t, ownerPolicy, owners, udpEcho(t, "re: "), nil, policy.Limits{})
	h.send(udpPacket(t, "10.0.0.2:5003", "192.0.2.1:53", []byte("query")))
	udp, ok := h.next().Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok || string(udp.Payload) != "re: query" {
		t.Fatalf("want the relayed answer while the lookup is still blocked, got %+v", udp)
	}
	if _, _, ok := h.ev.verdictFor("10.0.0.2:5003"); ok {
		t.Fatal("the verdict event did not wait for the owner")
	}
	close(owners.gate)
	waitFor(t, func() bool { _, _, ok := h.ev.verdictFor("10.0.0.2:5003"); return ok })
	f, v, _ := h.ev.verdictFor("10.0.0.2:5003")
	if v.Rule != "dns" || f.Owner == nil || f.Owner.UID != 1002 {
		t.Errorf("verdict %q owner %+v, want dns by uid 1002", v.Rule, f.Owner)
	}
	h.gw.Close()
	if f, ok := h.ev.closeFor("10.0.0.2:5003"); !ok || f.Owner == nil || f.Owner.UID != 1002 {
		t.Errorf("close event: owner %+v (closed %v), want uid 1002", f.Owner, ok)
	}
	if held, ready, logs := h.gw.owners.pending(); held+ready+logs != 0 {
		t.Errorf("left behind: %d held, %d ready, %d log lookups", held, ready, logs)
	}
}

// Every datagram sent while a UDP flow is held reaches upstream, in order;
// a refused flow's datagrams get one ICMP error between them.
func TestOwnerHeldDatagramsReplayed(t *testing.T) {
	owners := newFakeOwners(policy.UDP)
	h := newHarnessWith(t, ownerPolicy, owners, udpEcho(t, ""), nil, policy.Limits{})
	for _, m := range []string{"one", "two", "three"} {
		h.send(udpPacket(t, "10.0.0.2:5001", "192.0.2.1:4000", []byte(m)))
		h.send(udpPacket(t, "10.0.0.2:5002", "192.0.2.1:4000", []byte(m)))
	}
	h.nothingBefore("10.0.0.2")
	close(owners.gate)
	var echoed []string
	unreachable := 0
	for range 4 {
		p := h.next()
		if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok && p.Layer(layers.LayerTypeICMPv4) == nil {
			if udp.DstPort != 5001 {
				t.Fatalf("uid 1002's datagram was relayed: %v", p)
			}
			echoed = append(echoed, string(udp.Payload))
			continue
		}
		if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && icmp.TypeCode.Type() == layers.ICMPv4TypeDestinationUnreachable {
			unreachable++
		}
	}
	if len(echoed) != 3 || echoed[0] != "one" || echoed[1] != "two" || echoed[2] != "three" || unreachable != 1 {
		t.Errorf("echoed %q and %d ICMP errors, want one two three and 1", echoed, unreachable)
	}
	h.nothingBefore("10.0.0.2") // no second error for uid 1002
}

// Echo requests are held like datagrams: uid 1001's ping (identifier 7)
// is relayed, another uid's is refused.
func TestOwnerHeldEcho(t *testing.T) {
	ping := func(_ context.Context, dst netip.Addr) (EchoConn, error) {
		return &fakeEcho{alive: true, replies: make(chan [2]any, 4), closed: make(chan struct{})}, nil
	}
	owners := newFakeOwners(policy.ICMP)
	h := newHarnessWith(t, ownerPolicy, owners, nil, ping, policy.Limits{})
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.1", 7, 1, []byte("hello")))
	h.send(echoRequestPacket(t, "10.0.0.2", "192.0.2.1", 8, 1, []byte("hello")))
	h.nothingBefore("10.0.0.2")
	close(owners.gate)
	replies, denied := 0, 0
	for range 2 {
		icmp, ok := h.next().Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
		switch {
		case ok && icmp.TypeCode.Type() == layers.ICMPv4TypeEchoReply && icmp.Id == 7:
			replies++
		case ok && icmp.TypeCode.Type() == layers.ICMPv4TypeDestinationUnreachable:
			denied++
		default:
			t.Fatalf("unexpected %+v", icmp)
		}
	}
	if replies != 1 || denied != 1 {
		t.Errorf("%d replies and %d refusals, want 1 and 1", replies, denied)
	}
}

// In monitor mode a flow the policy would reject is let through, and its
// verdict says what would have happened.
func TestMonitorLetsThrough(t *testing.T) {
	h := newHarnessWith(t, "policy:\n  mode: monitor\n  default: deny\n  rules:\n    - {name: refuse, action: reject, proto: tcp, ports: [81]}\n", nil, pipeDial(t), nil, policy.Limits{})
	h.send(tcpSyn(t, "10.9.0.2:5000", "192.0.2.1:81"))
	if tcp := h.nextTCP(t); !tcp.SYN || !tcp.ACK {
		t.Fatalf("want SYN-ACK in monitor mode, got %+v", tcp)
	}
	_, v, ok := h.ev.verdictFor("10.9.0.2:5000")
	if !ok || v.Action != policy.Reject || v.Rule != "refuse" || !v.Monitor {
		t.Errorf("verdict %+v (logged %v), want reject by refuse, monitored", v, ok)
	}
}
