package netstack

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/tunwall/tunwall/policy"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
)

// closedUDPPort dials, with dial, a loopback UDP port nobody listens on,
// so that every datagram sent upstream comes back as a port unreachable.
func closedUDPPort(t *testing.T, dial DialFunc) DialFunc {
	t.Helper()
	dials := map[string]string{}
	for _, a := range []string{"127.0.0.1:0", "[::1]:0"} {
		pc, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Fatal(err)
		}
		dials[a] = pc.LocalAddr().String()
		pc.Close()
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if netip.MustParseAddrPort(addr).Addr().Is4() {
			return dial(ctx, network, dials["127.0.0.1:0"])
		}
		return dial(ctx, network, dials["[::1]:0"])
	}
}

// A destination's port unreachable reaches the client from the
// destination, every time, and the session goes on. The host's sockets
// queue the error with the refused datagram, which the error then quotes;
// a plain socket reports a bare ECONNREFUSED, and an empty datagram of the
// session is quoted.
func TestUDPUpstreamPortUnreachable(t *testing.T) {
	for _, dialer := range []struct {
		name  string
		dial  DialFunc
		quote string
	}{
		{"host socket", hostDialer(0, "", nil), "anyone?"},
		{"plain socket", (&net.Dialer{}).DialContext, ""},
	} {
		t.Run(dialer.name, func(t *testing.T) {
			h := newHarness(t, closedUDPPort(t, dialer.dial), nil, policy.Limits{})
			for _, tc := range []struct{ src, dst string }{
				{"10.0.0.2:5000", "192.0.2.1:80"},
				{"[fd00::2]:5000", "[2001:db8::1]:80"},
			} {
				src, dst := netip.MustParseAddrPort(tc.src), netip.MustParseAddrPort(tc.dst)
				for i := range 3 {
					h.send(udpPacket(t, tc.src, tc.dst, []byte("anyone?")))
					p := h.next()
					checkPortUnreachable(t, p, src, dst, dialer.quote)
					if t.Failed() {
						t.Fatalf("%s datagram %d: %v", tc.src, i, p)
					}
				}
			}
			if n := len(h.ev.verdictList()); n != 2 {
				t.Errorf("%d verdicts, want one per session: a refused datagram does not end it", n)
			}
			if n := len(h.ev.closeList()); n != 0 {
				t.Errorf("%d sessions closed, want none", n)
			}
		})
	}
}

// checkPortUnreachable asserts that p is the port unreachable dst sends to
// src about a datagram of theirs carrying payload, with valid checksums.
func checkPortUnreachable(t *testing.T, p gopacket.Packet, src, dst netip.AddrPort, payload string) {
	t.Helper()
	var quote []byte
	var quoteType gopacket.LayerType
	switch l := p.Layer(layers.LayerTypeICMPv4).(type) {
	case *layers.ICMPv4:
		if l.TypeCode != layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodePort) {
			t.Errorf("type/code %v, want port unreachable", l.TypeCode)
		}
		if checksum.Checksum(p.NetworkLayer().LayerPayload(), 0) != 0xffff {
			t.Error("bad ICMPv4 checksum")
		}
		quote, quoteType = l.Payload, layers.LayerTypeIPv4
	default:
		l6, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
		if !ok {
			t.Errorf("not ICMP: %v", p)
			return
		}
		if l6.TypeCode != layers.CreateICMPv6TypeCode(layers.ICMPv6TypeDestinationUnreachable, layers.ICMPv6CodePortUnreachable) {
			t.Errorf("type/code %v, want port unreachable", l6.TypeCode)
		}
		msg := p.NetworkLayer().LayerPayload()
		if icmp6Checksum(dst.Addr().As16(), src.Addr().As16(), msg) != 0xffff {
			t.Error("bad ICMPv6 checksum")
		}
		quote, quoteType = msg[icmpHeaderLen:], layers.LayerTypeIPv6
	}
	from, to := p.NetworkLayer().NetworkFlow().Endpoints()
	if from.String() != dst.Addr().String() || to.String() != src.Addr().String() {
		t.Errorf("sent %v -> %v, want from the destination %v to the client %v", from, to, dst.Addr(), src.Addr())
	}
	q := gopacket.NewPacket(quote, quoteType, gopacket.Default)
	qf, qt := q.NetworkLayer().NetworkFlow().Endpoints()
	udp, ok := q.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if !ok || qf.String() != src.Addr().String() || qt.String() != dst.Addr().String() ||
		uint16(udp.SrcPort) != src.Port() || uint16(udp.DstPort) != dst.Port() {
		t.Errorf("quoted datagram %v does not name the flow %v -> %v", q, src, dst)
		return
	}
	if string(udp.Payload) != payload || int(udp.Length) != udpHeaderLen+len(payload) {
		t.Errorf("quoted datagram carries %q (length %d), want %q", udp.Payload, udp.Length, payload)
	}
	seg := append(append([]byte(nil), udp.Contents...), udp.Payload...)
	if checksum.Checksum(seg, pseudoHeader(src.Addr().AsSlice(), dst.Addr().AsSlice(), protoUDP, len(seg))) != 0xffff {
		t.Error("bad checksum in the quoted datagram")
	}
}

// scriptedConn is a datagram socket whose writes fail with the errors in
// fails, one per write, before they succeed; reads wait for Close.
type scriptedConn struct {
	net.Conn
	mu     sync.Mutex
	fails  []error
	wrote  [][]byte
	closed chan struct{}
	once   sync.Once
}

func (c *scriptedConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.fails) > 0 {
		err := c.fails[0]
		c.fails = c.fails[1:]
		return 0, err
	}
	c.wrote = append(c.wrote, append([]byte(nil), b...))
	return len(b), nil
}

func (c *scriptedConn) Read([]byte) (int, error) {
	<-c.closed
	return 0, net.ErrClosed
}

func (c *scriptedConn) Close() error { c.once.Do(func() { close(c.closed) }); return nil }

func (c *scriptedConn) writes() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wrote
}

// oneDatagram reads msg once, then waits for Close.
type oneDatagram struct {
	scriptedConn
	msg  []byte
	sent bool
}

func (c *oneDatagram) Read(b []byte) (int, error) {
	if !c.sent {
		c.sent = true
		return copy(b, c.msg), nil
	}
	return c.scriptedConn.Read(b)
}

// A port unreachable that the upstream socket reports on a write belongs to
// an earlier datagram: it is passed on, and the datagram at hand still goes
// out. A second refusal in a row loses the datagram, not the session.
func TestRelayWriteRefused(t *testing.T) {
	refused := &net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("write", syscall.ECONNREFUSED)}
	for _, tc := range []struct {
		fails    int
		sent     int
		reported int
	}{
		{fails: 0, sent: 1, reported: 0},
		{fails: 1, sent: 1, reported: 1},
		{fails: 2, sent: 0, reported: 2},
	} {
		up := &scriptedConn{closed: make(chan struct{})}
		for range tc.fails {
			up.fails = append(up.fails, refused)
		}
		client := &oneDatagram{scriptedConn: scriptedConn{closed: make(chan struct{})}, msg: []byte("query")}
		var reported int
		done := make(chan struct{})
		passOn := func(err error) bool {
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return false
			}
			reported++
			if reported == tc.fails {
				close(done)
			}
			return true
		}
		r := &relay{
			client:   side{conn: client},
			upstream: side{conn: up, icmpError: passOn},
			datagram: true,
			idle:     time.Minute,
		}
		if tc.fails == 0 {
			close(done)
		}
		ended := make(chan string)
		go func() { ended <- r.run() }()
		<-done
		waitFor(t, func() bool { return len(up.writes()) == tc.sent && r.out.Load() == int64(5*tc.sent) })
		r.close(reasonShutdown)
		if reason := <-ended; reason != reasonShutdown {
			t.Errorf("%d refusals: session ended by %q, want it to go on until closed", tc.fails, reason)
		}
		if reported != tc.reported || len(up.writes()) != tc.sent || r.out.Load() != int64(5*tc.sent) {
			t.Errorf("%d refusals: reported %d, sent %d (%d bytes); want %d, %d", tc.fails, reported, len(up.writes()), r.out.Load(), tc.reported, tc.sent)
		}
	}
}

// TestRelayKeepaliveNotIdle: a TCP flow that moves no byte but still
// carries packets (keepalive probes) is not idle; once they stop, it ends
// as idle.
func TestRelayKeepaliveNotIdle(t *testing.T) {
	const idle = 50 * time.Millisecond
	a, aPeer := net.Pipe()
	b, bPeer := net.Pipe()
	defer aPeer.Close()
	defer bPeer.Close()
	var probes atomic.Uint64
	r := &relay{
		client:   side{conn: a},
		upstream: side{conn: b},
		idle:     idle,
		packets:  func() (uint64, uint64) { return probes.Load(), 0 },
	}
	ended := make(chan string, 1)
	go func() { ended <- r.run() }()
	// A probe every fifth of the idle time, for ten idle times.
	for range 50 {
		probes.Add(1)
		select {
		case reason := <-ended:
			t.Fatalf("ended (%s) while probes came; %d probes", reason, probes.Load())
		case <-time.After(idle / 5):
		}
	}
	wantEnd(t, ended, reasonIdle, "the last probe")
}

// TestRelayStartCounts: a relay given the packet counts at its start
// takes them from packetsAtStart and asks packets only when its idle timer
// looks (here never: the flow ends first).
func TestRelayStartCounts(t *testing.T) {
	a, aPeer := net.Pipe()
	b, bPeer := net.Pipe()
	var asked, atStart atomic.Int32
	r := &relay{
		client:         side{conn: a},
		upstream:       side{conn: b},
		idle:           time.Hour,
		packets:        func() (uint64, uint64) { asked.Add(1); return 0, 0 },
		packetsAtStart: func() (uint64, uint64) { atStart.Add(1); return 0, 0 },
	}
	ended := make(chan string, 1)
	go func() { ended <- r.run() }()
	aPeer.Close()
	bPeer.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("relay still running 5 s after both ends closed")
	}
	if asked.Load() != 0 || atStart.Load() != 1 {
		t.Errorf("packets asked %d times, packetsAtStart %d; want 0 and 1", asked.Load(), atStart.Load())
	}
}

// probeEvent is a call of relay.probe.
type probeEvent struct{ upstream, on bool }

// prober plays the two peers of a relayed TCP flow for the keepalive
// tests: each counts the segments its side has received. A peer that
// probes sends one every fifth of the idle time; a side tunwall probes
// answers each of tunwall's probes, as a live peer does.
type prober struct {
	segs   [2]atomic.Uint64 // client, upstream
	probes [2]atomic.Bool   // the peer on that side probes
	probed [2]atomic.Bool   // tunwall probes that side
	events chan probeEvent
}

func newProber() *prober { return &prober{events: make(chan probeEvent, 16)} }

func (p *prober) packets() (uint64, uint64) { return p.segs[0].Load(), p.segs[1].Load() }

func (p *prober) probe(upstream, on bool) {
	i := 0
	if upstream {
		i = 1
	}
	p.probed[i].Store(on)
	p.events <- probeEvent{upstream, on}
}

// run ticks every period until stop is closed.
func (p *prober) run(period time.Duration, stop chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-time.After(period):
		}
		for i := range p.segs {
			if p.probes[i].Load() || p.probed[i].Load() {
				p.segs[i].Add(1)
			}
		}
	}
}

func (p *prober) want(t *testing.T, want probeEvent) {
	t.Helper()
	select {
	case got := <-p.events:
		if got != want {
			t.Fatalf("probe %+v, want %+v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no probe %+v in 5 s", want)
	}
}

// startProbed starts a relay between two pipes (upstream, if set, in
// place of the second) whose packets and probes are those of a new
// prober, and returns the prober and the channel the relay's end reason
// comes on.
func startProbed(t *testing.T, idle time.Duration, upstream net.Conn) (*prober, chan string) {
	a, aPeer := net.Pipe()
	t.Cleanup(func() { aPeer.Close() })
	if upstream == nil {
		b, bPeer := net.Pipe()
		t.Cleanup(func() { bPeer.Close() })
		upstream = b
	}
	p := newProber()
	r := &relay{client: side{conn: a}, upstream: side{conn: upstream}, idle: idle, packets: p.packets, probe: p.probe}
	ended := make(chan string, 1)
	go func() { ended <- r.run() }()
	return p, ended
}

// TestRelayProbesTheOtherEnd: while one end of a flow that moves no byte
// sends keepalive probes, tunwall probes the other end (whose answers do
// not count as activity); once the prober stops, tunwall stops too and
// the flow ends as idle. Both ways round.
func TestRelayProbesTheOtherEnd(t *testing.T) {
	// Long enough that a late tick of a loaded machine's timers does not
	// pass for silence.
	const idle = 300 * time.Millisecond
	for _, tc := range []struct {
		name     string
		prober   int // 0: the client probes, 1: the server
		upstream bool
		period   time.Duration // between probes
	}{
		{"client probes", 0, true, idle / 5},
		{"server probes", 1, false, idle / 5},
		// Probes further apart than the checks: tunwall keeps probing
		// between them.
		{"client probes seldom", 0, true, idle / 2},
		{"server probes seldom", 1, false, idle / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ended := startProbed(t, idle, nil)
			stop := make(chan struct{})
			defer close(stop)
			p.probes[tc.prober].Store(true)
			go p.run(tc.period, stop)
			p.want(t, probeEvent{tc.upstream, true})
			select {
			case reason := <-ended:
				t.Fatalf("ended (%s) while a peer probed", reason)
			case e := <-p.events:
				t.Fatalf("probe change %+v while a peer probed", e)
			case <-time.After(2 * idle):
			}
			p.probes[tc.prober].Store(false)
			p.want(t, probeEvent{tc.upstream, false})
			wantEnd(t, ended, reasonIdle, "the prober stopped")
			select {
			case e := <-p.events:
				t.Errorf("another probe change: %+v", e)
			default:
			}
		})
	}
}

// TestRelayTrailingPacketsProbeNoOne: a packet that comes once, a while
// after the last byte (a late ACK), may start tunwall's probes of the
// other side, whose answers then come; the flow still ends as idle.
func TestRelayTrailingPacketsProbeNoOne(t *testing.T) {
	const idle = 100 * time.Millisecond
	p, ended := startProbed(t, idle, nil)
	stop := make(chan struct{})
	defer close(stop)
	go p.run(idle/5, stop) // answers tunwall's probes
	time.Sleep(idle / 3)   // past the first check
	p.segs[0].Add(1)
	wantEnd(t, ended, reasonIdle, "the last packet")
}

// timedOutConn is a connection whose reads wait for, then fail with, the
// error sent on fail.
type timedOutConn struct {
	net.Conn
	fail chan error
}

func (c *timedOutConn) Read([]byte) (int, error) { return 0, <-c.fail }

// TestRelayProbeTimeoutIsIdle: a side that stops answering tunwall's
// probes ends the flow as idle, from the host's socket (ETIMEDOUT) or the
// stack's; the same error without probes is a reset.
func TestRelayProbeTimeoutIsIdle(t *testing.T) {
	const idle = 100 * time.Millisecond
	for _, tc := range []struct {
		name   string
		err    error
		probes bool
		want   string
	}{
		{"host socket", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}, true, reasonIdle},
		{"stack", &net.OpError{Op: "read", Err: errors.New("operation timed out")}, true, reasonIdle},
		{"no probes", &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ETIMEDOUT)}, false, reasonRST},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, _ := net.Pipe()
			up := &timedOutConn{Conn: b, fail: make(chan error, 1)}
			p, ended := startProbed(t, idle, up)
			stop := make(chan struct{})
			defer close(stop)
			p.probes[0].Store(tc.probes)
			go p.run(idle/5, stop)
			if tc.probes {
				p.want(t, probeEvent{true, true})
			}
			up.fail <- tc.err
			wantEnd(t, ended, tc.want, "the upstream failed")
		})
	}
}

// wantEnd waits up to 5 s for a relay to end, and checks its reason.
func wantEnd(t *testing.T, ended <-chan string, want, after string) {
	t.Helper()
	select {
	case reason := <-ended:
		if reason != want {
			t.Errorf("ended by %q, want %q", reason, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("still relaying 5 s after %s", after)
	}
}

// TestRelayLateAnswerProbesNoOne: the answer to tunwall's last probe of
// a side can come after tunwall stopped probing it; it must not read as
// that side's peer probing (which would start probes the other way).
func TestRelayLateAnswerProbesNoOne(t *testing.T) {
	const idle = time.Hour // the flow never ends here; checkIdle is called by hand
	for _, tc := range []struct {
		name     string
		probing  probing
		answerer int // the side whose answer comes late: 0 client, 1 server
	}{
		{"client answers late", probingClient, 0},
		{"server answers late", probingUpstream, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var segs [2]uint64
			var events []probeEvent
			r := &relay{idle: idle, packets: func() (uint64, uint64) { return segs[0], segs[1] },
				probe: func(upstream, on bool) { events = append(events, probeEvent{upstream, on}) }}
			r.timer = time.AfterFunc(idle, func() {})
			defer r.timer.Stop()
			now := time.Now()
			r.last.Store(now.Add(-idle / 2).UnixNano()) // no byte for half an hour
			r.checked = now.Add(-time.Minute)
			r.probing, r.probed = tc.probing, tc.probing
			r.heard = [2]time.Time{now.Add(-idle), now.Add(-idle)} // the prober long silent
			r.checkIdle()
			if len(events) != 1 || events[0].on {
				t.Fatalf("probe changes %+v, want probing turned off", events)
			}
			segs[tc.answerer]++ // the answer to the last probe
			r.checkIdle()
			r.checkIdle()
			if len(events) != 1 {
				t.Errorf("probe changes %+v after the late answer, want none", events[1:])
			}
		})
	}
}
