package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestMaxFlowsUnderLoad: 32 clients opening flows as fast as they can
// against limits.max_flows: 8. Flows over the limit get a reset at once;
// live flows never exceed 8; every refusal is counted and logged, the
// lines past the rate limit as suppressed counts: refused events plus
// suppressed counts equal the limit-drop counter, and that matches the
// clients' refused connects. Afterwards no flow is left.
func TestMaxFlowsUnderLoad(t *testing.T) {
	l := routedLab(t, "twm")
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := startGateway(t, l, "twlim", fmt.Sprintf("tun: {name: twlim}\nlog: {format: json}\nlimits: {max_flows: 8}\ncontrol: {socket: %s}\npolicy: {default: allow}\n", sock))
	metrics := unixMetrics(t, sock)
	before := metrics()

	// The load, with the live flows sampled while it runs.
	crr := l.Cmd(l.Client, filepath.Join(bin, "twlab"), "crr", net.JoinHostPort(lab.ServerV4, "7001"), "32", "3")
	var out strings.Builder
	crr.Stdout = &out
	if err := crr.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- crr.Wait() }()
	most := 0.0
	for sampling := true; sampling; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("twlab crr: %v", err)
			}
			sampling = false
		case <-time.After(20 * time.Millisecond):
			most = max(most, metrics()[`tunwall_flows_active{proto="tcp"}`])
		}
	}
	var res struct {
		Done, Failed int
		Errors       map[string]int
	}
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("crr output %q: %v", out.String(), err)
	}
	refusedConnects := 0
	for msg, n := range res.Errors {
		if !strings.Contains(msg, "connection refused") {
			t.Errorf("%d flows failed with %q, want only connection refused", n, msg)
		}
		refusedConnects += n
	}
	if res.Done == 0 || refusedConnects == 0 {
		t.Fatalf("crr: %d flows done, %d refused: the load did not reach the limit", res.Done, refusedConnects)
	}
	if most > 8 || most == 0 {
		t.Errorf("at most %v live TCP flows seen, want 1 to 8", most)
	}
	after := metrics()
	for i := 0; active(after) != 0; i++ {
		if i == 100 {
			t.Fatalf("%v flows still live 5 s after the load", active(after))
		}
		time.Sleep(50 * time.Millisecond)
		after = metrics()
	}
	drops := int(after[`tunwall_drops_total{reason="limit"}`] - before[`tunwall_drops_total{reason="limit"}`])

	// The log, complete once tunwall has stopped.
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	logged, suppressed := 0, 0
	for _, e := range readEvents(t, tw.Log) {
		switch e.str("event") {
		case "refused":
			if e.str("limit") != "max_flows" {
				t.Errorf("refused by %q, want max_flows", e.str("limit"))
			}
			logged++
		case "suppressed":
			suppressed += int(e.num("count"))
		}
	}
	// A client's last connect may be refused after the run's end, which
	// cuts it short without counting it: one per client at most.
	if logged+suppressed != drops || drops < refusedConnects || drops > refusedConnects+32 {
		t.Errorf("refusals: %d logged + %d suppressed, %d counted, %d connects refused; want the first three equal and up to 32 more than the last", logged, suppressed, drops, refusedConnects)
	}
	if suppressed == 0 {
		t.Errorf("%d refusals in 3 s and none suppressed, want the log rate-limited", drops)
	}
}

// unixMetrics returns a function that fetches and parses the metrics from
// the control socket at sock.
func unixMetrics(t *testing.T, sock string) func() map[string]float64 {
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return net.Dial("unix", sock) },
	}}
	return func() map[string]float64 {
		t.Helper()
		code, body := fetch(t, hc, "GET", "http://tunwall/metrics", nil)
		if code != 200 {
			t.Fatalf("GET /metrics: %d %s", code, body)
		}
		return metricsOf(t, body)
	}
}

// waitMetric polls metrics until the metric name reads want, for up to
// within; what says what it waits for.
func waitMetric(t *testing.T, metrics func() map[string]float64, name string, want float64, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := metrics()[name]
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s is %v after %v, want %v", what, name, got, within, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMaxFlowsPerSource: with limits.max_flows_per_source: 3 the client's
// fourth connection is refused at once while its three stay up, a host
// behind it (another source) still connects, and once one of the
// client's flows has ended it connects again. The refusal is counted,
// listed with the recent refusals and logged, with its limit and source.
func TestMaxFlowsPerSource(t *testing.T) {
	l := routedLab(t, "twps")
	branch, err := l.AddBranch(1500)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := startGateway(t, l, "twps", fmt.Sprintf("tun: {name: twps}\nlog: {format: json}\nlimits: {max_flows_per_source: 3}\ncontrol: {socket: %s}\npolicy: {default: allow}\n", sock))
	metrics := unixMetrics(t, sock)
	server := net.JoinHostPort(lab.ServerV4, "7001")
	echoed := func(ns string) (net.Conn, error) {
		c, err := l.Dial(ns, "tcp", server, 3*time.Second)
		if err != nil {
			return nil, err
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		b := []byte{1}
		_, err = c.Write(b)
		if err == nil {
			_, err = io.ReadFull(c, b)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("echo: %w", err)
		}
		return c, nil
	}
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for i := 0; i < 3; i++ {
		c, err := echoed(l.Client)
		if err != nil {
			t.Fatalf("client connection %d of 3: %v", i+1, err)
		}
		held = append(held, c)
	}
	start := time.Now()
	if c, err := echoed(l.Client); err == nil || !strings.Contains(err.Error(), "connection refused") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("client connection 4 of 3: %v, want connection refused", err)
	} else if d := time.Since(start); d > time.Second {
		t.Errorf("refusal took %v, want a reset at once", d)
	}
	other, err := echoed(branch)
	if err != nil {
		t.Fatalf("a connection from another source: %v", err)
	}
	held = append(held, other)

	// One of the client's flows ends; once tunwall has seen it end, the
	// client has a place again.
	held[0].Close()
	waitMetric(t, metrics, `tunwall_flows_active{proto="tcp"}`, 3, 5*time.Second, "live TCP flows once one of four has closed")
	again, err := echoed(l.Client)
	if err != nil {
		t.Fatalf("client connection after one of its flows ended: %v", err)
	}
	held = append(held, again)
	if n := metrics()[`tunwall_drops_total{reason="limit"}`]; n != 1 {
		t.Errorf("%v refusals by a limit counted, want 1", n)
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) { return net.Dial("unix", sock) },
	}}
	code, body := fetch(t, hc, "GET", "http://tunwall/v1/denied", nil)
	var denied []struct{ Src, Dst, Action, Limit string }
	if err := json.Unmarshal([]byte(body), &denied); code != 200 || err != nil {
		t.Fatalf("GET /v1/denied: %d %s", code, body)
	}
	if len(denied) != 1 || denied[0].Limit != "max_flows_per_source" || denied[0].Src != lab.ClientV4 || denied[0].Dst != server || denied[0].Action != "reject" {
		t.Errorf("recent refusals %+v, want the client's by max_flows_per_source", denied)
	}

	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var refused []event
	for _, e := range readEvents(t, tw.Log) {
		if e.str("event") == "refused" {
			refused = append(refused, e)
		}
	}
	if len(refused) != 1 || refused[0].str("limit") != "max_flows_per_source" || !strings.HasPrefix(refused[0].str("src"), lab.ClientV4+":") {
		t.Errorf("refused events %v, want one by max_flows_per_source from %s", refused, lab.ClientV4)
	}
}

// TestMaxPendingAndUDPSessions: with limits.max_pending_tcp: 2 and
// max_udp_sessions: 2. While two connections wait for upstream dials that
// cannot finish yet (to an address on the server's link that no host has:
// the gateway's neighbour lookup gives up after about three seconds), a
// third connection is reset at once; the two get their reset when their
// dials fail, and then a connection works again. With two UDP sessions
// open, a third gets port unreachable at once, and once the two have
// idled out a new one works. Each refusal is counted and logged with its
// limit.
func TestMaxPendingAndUDPSessions(t *testing.T) {
	l := routedLab(t, "twpu")
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := startGateway(t, l, "twpu", fmt.Sprintf("tun: {name: twpu}\nlog: {format: json}\nlimits: {max_pending_tcp: 2, max_udp_sessions: 2, udp_idle: 2s}\ncontrol: {socket: %s}\npolicy: {default: allow}\n", sock))
	metrics := unixMetrics(t, sock)
	server := net.JoinHostPort(lab.ServerV4, "7001")

	t.Run("max_pending_tcp", func(t *testing.T) {
		type result struct {
			err  error
			took time.Duration
		}
		results := make(chan result, 2)
		for range 2 {
			go func() {
				start := time.Now()
				c, err := l.Dial(l.Client, "tcp", net.JoinHostPort("10.77.2.99", "7001"), 10*time.Second)
				if c != nil {
					c.Close()
				}
				results <- result{err, time.Since(start)}
			}()
		}
		waitMetric(t, metrics, "tunwall_pending_handshakes", 2, 2*time.Second, "the two connections waiting for their dials")
		start := time.Now()
		c, err := l.Dial(l.Client, "tcp", server, 3*time.Second)
		if err == nil {
			c.Close()
		}
		if err == nil || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("a third connection while two wait: %v, want connection refused", err)
		} else if d := time.Since(start); d > time.Second {
			t.Errorf("refusal took %v, want a reset at once", d)
		}
		for range 2 {
			r := <-results
			if r.err == nil || r.took < 2*time.Second {
				t.Errorf("a connection whose dial cannot finish: %v after %v, want an error once the dial gave up", r.err, r.took.Round(time.Millisecond))
			}
		}
		// The client has its reset a moment before tunwall has let go of
		// the handshake's place. The clients retransmit their SYNs once a
		// second, and the dials fail on the third: a retransmission that
		// crossed the reset gets one of its own, not a dial (failedSYN).
		waitMetric(t, metrics, "tunwall_pending_handshakes", 0, 2*time.Second, "handshakes once both dials failed")
		c, err = l.Dial(l.Client, "tcp", server, 3*time.Second)
		if err != nil {
			t.Fatalf("a connection once the dials failed: %v", err)
		}
		if err := echoByte(c); err != nil {
			t.Errorf("echo once the dials failed: %v", err)
		}
		c.Close()
	})

	t.Run("max_udp_sessions", func(t *testing.T) {
		session := func() net.Conn {
			c, err := l.Dial(l.Client, "udp", server, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			return c
		}
		for i := range 2 {
			if err := echoByte(session()); err != nil {
				t.Fatalf("UDP session %d of 2: %v", i+1, err)
			}
		}
		start := time.Now()
		wantPortUnreachable(t, session(), "a third UDP session")
		if d := time.Since(start); d > time.Second {
			t.Errorf("refusal took %v, want port unreachable at once", d)
		}
		waitMetric(t, metrics, `tunwall_flows_active{proto="udp"}`, 0, 10*time.Second, "UDP sessions after their last datagram (udp_idle 2s)")
		if err := echoByte(session()); err != nil {
			t.Fatalf("a UDP session once the two idled out: %v", err)
		}
	})

	if n := metrics()[`tunwall_drops_total{reason="limit"}`]; n != 2 {
		t.Errorf("%v refusals by a limit counted, want 2", n)
	}
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	limits := map[string]int{}
	for _, e := range readEvents(t, tw.Log) {
		if e.str("event") == "refused" {
			limits[e.str("proto")+" "+e.str("limit")]++
		}
	}
	if len(limits) != 2 || limits["tcp max_pending_tcp"] != 1 || limits["udp max_udp_sessions"] != 1 {
		t.Errorf("refused events by protocol and limit %v, want one tcp max_pending_tcp and one udp max_udp_sessions", limits)
	}
}
