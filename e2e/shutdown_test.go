package e2e

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestSIGTERMCleansUp runs a second gateway in its own lab, holds a flow
// open, sends SIGTERM (and, in a second lab, SIGINT, as Ctrl-C does) and
// checks: exit 0, the flow closed with reason shutdown, READY=1 and
// STOPPING=1 told to the service manager, and no device, address, route or
// rule of tunwall's is left.
func TestSIGTERMCleansUp(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(lab.SignalName(sig), func(t *testing.T) { stopCleansUp(t, sig) })
	}
}

// stopCleansUp is TestSIGTERMCleansUp with one signal.
func stopCleansUp(t *testing.T, sig syscall.Signal) {
	name := lab.SignalName(sig)
	l := routedLab(t, "tws")
	before := routingState(t, l)
	tw := startGateway(t, l, "twstop", "tun: {name: twstop}\nlog: {format: json}\npolicy:\n  default: allow\n")

	c, err := l.Dial(l.Client, "tcp", net.JoinHostPort(lab.ServerV4, "7001"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}

	if err := tw.StopWith(sig, 10*time.Second); err != nil {
		t.Fatalf("tunwall exit after %s: %v", name, err)
	}
	e := waitEvent(t, tw.Log, flowEvent("close", c.LocalAddr().String(), c.RemoteAddr().String()))
	if e.str("reason") != "shutdown" {
		t.Errorf("held flow closed with reason %q, want shutdown", e.str("reason"))
	}
	stop := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "stop" })
	if stop.str("level") != "info" || stop.str("error") != "" {
		t.Errorf("stop event %v, want info without an error", stop)
	}
	for _, e := range readEvents(t, tw.Log) {
		if e.str("event") == "device" {
			t.Errorf("a clean stop logged %v: removing its own device is no device change", e)
		}
	}
	if got := tw.Notified(); !slices.Equal(got, []string{"READY=1", "STOPPING=1"}) {
		t.Errorf("told the service manager %q, want READY=1 then STOPPING=1", got)
	}
	if out, err := l.Run(l.Gateway, "ip", "link", "show", "twstop"); err == nil {
		t.Errorf("TUN device still exists after %s:\n%s", name, out)
	}
	l.Unroute() // the lab's own rules; what remains must equal the start
	if after := routingState(t, l); after != before {
		t.Errorf("routing state changed:\n%s", lineDiff(before, after))
	}
}

// routingState dumps the gateway namespace's addresses, rules, routes of
// every table and forwarding and reverse-path settings: what a clean exit
// must leave exactly as it found it.
func routingState(t *testing.T, l *lab.Lab) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"ip", "-o", "addr"}, {"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "all"}, {"ip", "-6", "route", "show", "table", "all"},
		{"sh", "-c", "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv6/conf/*/forwarding /proc/sys/net/ipv6/conf/*/force_forwarding"},
	} {
		out, err := l.Run(l.Gateway, args...)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(out)
	}
	return b.String()
}

// TestSIGTERMUnderLoad stops a gateway in the middle of traffic: new flows
// arriving at full rate, held flows, and two downloads running. tunwall
// exits 0 in time, every client connection ends (none hangs), and the log
// has exactly one close event for every allowed flow, the held ones with
// reason shutdown, before a final stop event.
func TestSIGTERMUnderLoad(t *testing.T) {
	l := routedLab(t, "twu")
	tw := startGateway(t, l, "twload", "tun: {name: twload}\nlog: {level: debug, format: json}\npolicy:\n  default: allow\n")

	crr := l.Cmd(l.Client, filepath.Join(bin, "twlab"), "crr", net.JoinHostPort(lab.ServerV4, "7001"), "8", "20")
	if err := crr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crr.Process.Kill(); crr.Wait() })
	held := make(map[string]bool) // "src dst" of the held flows
	for i := range 50 {
		c, _ := echoFlow(t, l, l.Client, fmt.Sprintf("held %d\n", i))
		held[c.LocalAddr().String()+" "+c.RemoteAddr().String()] = true
	}
	ended := make(chan error, 2)
	for i := range 2 {
		c, err := l.Dial(l.Client, "tcp", net.JoinHostPort(lab.ServerV6, "7003"), 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "%d %d\n", 1<<40, i+1)
		if _, err := io.ReadFull(c, make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		go func() {
			_, err := io.Copy(io.Discard, c)
			ended <- err
		}()
	}

	waitAllowed(t, tw.Log, 1000) // stop once the new flows are well under way
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatalf("tunwall exit after SIGTERM under load: %v", err)
	}
	for range 2 {
		select {
		case <-ended:
		case <-time.After(5 * time.Second):
			t.Fatal("a download through the stopped gateway still runs 5 s after its exit")
		}
	}
	checkCloses(t, readEvents(t, tw.Log), held)
}

// checkCloses checks the log of a gateway stopped far from its limits:
// one close event for each allowed flow (flows arriving while it stops
// included) and none for any other, no refused event, reason shutdown for
// the held flows ("src dst"), and the stop event last.
func checkCloses(t *testing.T, evs []event, held map[string]bool) {
	t.Helper()
	allowed, closes := map[string]bool{}, map[string]int{}
	for _, e := range evs {
		switch e.str("event") {
		case "verdict":
			if e.str("action") == "allow" {
				allowed[fmt.Sprint(e["flow"])] = true
			}
		case "refused": // no limit is anywhere near in this test
			t.Errorf("flow %v refused by %s", e["flow"], e.str("limit"))
		case "close":
			closes[fmt.Sprint(e["flow"])]++
			if held[e.str("src")+" "+e.str("dst")] {
				if e.str("reason") != "shutdown" {
					t.Errorf("held flow %s closed with reason %q, want shutdown", e.str("src"), e.str("reason"))
				}
				delete(held, e.str("src")+" "+e.str("dst"))
			}
		}
	}
	if len(allowed) < 1000 {
		t.Errorf("%d flows allowed, want the load to have made at least 1000", len(allowed))
	}
	missing := 0
	for id := range allowed {
		if closes[id] != 1 {
			if missing++; missing <= 5 {
				t.Errorf("flow %s: %d close events, want 1", id, closes[id])
			}
		}
	}
	for id, n := range closes {
		if !allowed[id] {
			t.Errorf("flow %s: %d close events without an allow verdict", id, n)
		}
	}
	if missing > 5 {
		t.Errorf("... %d flows in all without exactly one close event", missing)
	}
	if len(held) != 0 {
		t.Errorf("%d held flows have no close event", len(held))
	}
	if n := len(evs); n == 0 || evs[n-1].str("event") != "stop" {
		t.Errorf("the log does not end with the stop event")
	}
}

// countAllowed counts the allow verdicts in evs.
func countAllowed(evs []event) int {
	n := 0
	for _, e := range evs {
		if e.str("event") == "verdict" && e.str("action") == "allow" {
			n++
		}
	}
	return n
}

// TestSIGTERMUnderLocalLoad is TestSIGTERMUnderLoad for flows that start
// on the gateway itself (route-all), whose events wait for their owner
// lookups: the same one close per allowed flow, none lost at the stop, and
// each close event without an owner counted as a missed or skipped lookup.
func TestSIGTERMUnderLocalLoad(t *testing.T) {
	l := routedLab(t, "twy")
	tw := launch(t, l, routed("debug", "policy:\n  default: allow\n"))
	crr := l.Cmd(l.Gateway, filepath.Join(bin, "twlab"), "crr", net.JoinHostPort(lab.ServerV4, "7001"), "8", "20")
	if err := crr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { crr.Process.Kill(); crr.Wait() })
	held := make(map[string]bool)
	for i := range 20 {
		c, _ := echoFlow(t, l, l.Gateway, fmt.Sprintf("held %d\n", i))
		held[c.LocalAddr().String()+" "+c.RemoteAddr().String()] = true
	}
	waitAllowed(t, tw.Log, 1000)
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatalf("tunwall exit after SIGTERM under load: %v", err)
	}
	evs := readEvents(t, tw.Log)
	checkCloses(t, evs, held)
	// Owners: a close event without one is a lookup that missed (the
	// socket was gone: these flows live about a millisecond) or was
	// skipped, and the stop event counts each.
	var with, without int64
	for _, e := range evs {
		if e.str("event") == "close" {
			if e["uid"] == nil {
				without++
			} else {
				with++
			}
		}
	}
	stop := evs[len(evs)-1]
	if with > stop.num("owners_found") || without > stop.num("owners_missed")+stop.num("owners_skipped") || with == 0 {
		t.Errorf("close events: %d with an owner, %d without; stop event: %v found, %v missed, %v skipped",
			with, without, stop["owners_found"], stop["owners_missed"], stop["owners_skipped"])
	}
	t.Logf("close events: %d with an owner, %d without", with, without)
}

// waitAllowed waits until the log at path has n allow verdicts.
func waitAllowed(t *testing.T, path string, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); countAllowed(readEvents(t, path)) < n; {
		if time.Now().After(deadline) {
			t.Fatalf("the load did not reach %d flows in 15 s", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
