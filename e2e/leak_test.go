package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestFlowsLeaveNothing: every way a flow can end gives back what it
// took. A mix of flows from the gateway namespace (route-all), IPv4 and
// IPv6: TCP echoes closed by FIN after a half-close, closed by RST, and
// closed with a download still unread; allowed TCP whose upstream
// refuses; rejected and denied TCP; UDP sessions left to their idle
// timeout; pings. Once they are over, tunwall holds no flow, no more
// file descriptors than before them and no more goroutines than before
// them (its flow workers included, which exit after 10 s without work).
func TestFlowsLeaveNothing(t *testing.T) {
	l := routedLab(t, "twk")
	sock := filepath.Join(t.TempDir(), "control.sock")
	// The flows below start all at once. The device's queue towards
	// tunwall is made deeper than the default (4096 packets), to hold them
	// even while tunwall is slow to read (a race-detector build): a
	// client's RST lost there would leave its flow open until
	// limits.tcp_idle, as a lost RST leaves any TCP peer's connection
	// open, and losses are not what this test is about (TestQueueLength
	// is about them).
	tw := launch(t, l, fmt.Sprintf(routedTun("info", ", queue_length: 10000", `control: {socket: %s}
limits: {udp_idle: 1s}
policy:
  default: allow
  rules:
    - {name: reject-7009, action: reject, proto: tcp, ports: [7009]}
    - {name: deny-7010, action: deny, proto: tcp, ports: [7010]}
`), sock))
	metrics := unixMetrics(t, sock)
	// Goroutines are counted from before any flow. Descriptors from after
	// a first flow: app identity opens its sock_diag socket on the first
	// lookup and keeps it.
	goroutines := metrics()["go_goroutines"]
	if err := leakFlows[0].run(l, lab.ServerV4, 0); err != nil {
		t.Fatal(err)
	}
	before := metrics()
	for i := 0; active(before) != 0; i++ {
		if i == 100 {
			t.Fatalf("the first flow did not end: %v", before)
		}
		time.Sleep(50 * time.Millisecond)
		before = metrics()
	}
	before["go_goroutines"] = goroutines
	if _, ok := before["tunwall_stack_endpoints"]; !ok {
		t.Fatal("no tunwall_stack_endpoints in the metrics")
	}
	fds := openFiles(tw.Cmd.Process.Pid)

	runLeakFlows(t, l, 40)

	// Poll until everything is given back (workers idle out after 10 s).
	var after map[string]float64
	deadline := time.Now().Add(40 * time.Second)
	for {
		after = metrics()
		if quiet(before, after) || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !quiet(before, after) {
		t.Logf("tunwall's descriptors before the flows: %v; after: %v", fds, openFiles(tw.Cmd.Process.Pid))
		dropped, _ := l.Run(l.Gateway, "cat", "/sys/class/net/tw0/statistics/tx_dropped")
		t.Logf("packets the device dropped on their way to tunwall: %s", strings.TrimSpace(dropped))
		for _, k := range []string{"go_goroutines", "process_open_fds", "tunwall_stack_endpoints", `tunwall_flows_active{proto="tcp"}`, `tunwall_flows_active{proto="udp"}`, `tunwall_flows_active{proto="icmp"}`} {
			t.Errorf("%s: %v before the flows, %v 40 s after them", k, before[k], after[k])
		}
	}
	// The load was real: every flow was judged.
	judged := 0.0
	for k, v := range after {
		if strings.HasPrefix(k, "tunwall_flows_total{") {
			judged += v - before[k]
		}
	}
	if want := float64(2 * 40 * len(leakFlows)); judged < want {
		t.Errorf("%v flows judged, want at least %v", judged, want)
	}
}

// runLeakFlows runs each of leakFlows n times to each server address from
// the gateway namespace, all at once, and pings each address.
func runLeakFlows(t *testing.T, l *lab.Lab, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 2*n*len(leakFlows))
	for _, server := range []string{lab.ServerV4, lab.ServerV6} {
		for i := range n {
			for _, flow := range leakFlows {
				wg.Go(func() {
					if err := flow.run(l, server, i); err != nil {
						errs <- fmt.Errorf("%s to %s: %w", flow.name, server, err)
					}
				})
			}
		}
		if out, err := l.Run(l.Gateway, "ping", "-q", "-c", "5", "-i", "0.05", "-W", "2", server); err != nil {
			t.Errorf("ping %s: %v\n%s", server, err, out)
		}
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed++; failed <= 5 {
			t.Error(err)
		}
	}
	if failed > 5 {
		t.Errorf("... and %d more", failed-5)
	}
}

// quiet reports whether after holds no flow, no endpoint in the stack and
// no more descriptors and goroutines than before.
func quiet(before, after map[string]float64) bool {
	return active(after) == 0 && after["tunwall_stack_endpoints"] == 0 &&
		after["process_open_fds"] <= before["process_open_fds"] && after["go_goroutines"] <= before["go_goroutines"]
}

// active is the number of live flows.
func active(m map[string]float64) float64 {
	n := 0.0
	for _, p := range []string{"tcp", "udp", "icmp"} {
		n += m[`tunwall_flows_active{proto="`+p+`"}`]
	}
	return n
}

// openFiles lists what process pid's descriptors refer to.
func openFiles(pid int) []string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, _ := os.ReadDir(dir)
	var files []string
	for _, e := range entries {
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			files = append(files, e.Name()+"->"+target)
		}
	}
	return files
}

// leakFlow is one way for a flow to go and end.
type leakFlow struct {
	name string
	run  func(l *lab.Lab, server string, i int) error
}

var leakFlows = []leakFlow{
	{"echo closed by FIN", func(l *lab.Lab, server string, i int) error {
		c, br, err := leakEcho(l, server, i)
		if err != nil {
			return err
		}
		defer c.Close()
		c.(*net.TCPConn).CloseWrite()
		if _, err := br.ReadByte(); err != io.EOF { // the echo half-closes after EOF
			return fmt.Errorf("after half-close: %v, want EOF", err)
		}
		return nil
	}},
	{"echo closed by RST", func(l *lab.Lab, server string, i int) error {
		c, _, err := leakEcho(l, server, i)
		if err != nil {
			return err
		}
		c.(*net.TCPConn).SetLinger(0)
		return c.Close()
	}},
	{"download read to its end", func(l *lab.Lab, server string, i int) error {
		// The server closes first, and so does tunwall's side to the client.
		c, err := l.Dial(l.Gateway, "tcp", hostPort(server, "7003"), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "%d %d\n", 1000, i+1)
		if n, err := io.Copy(io.Discard, c); err != nil || n != 1000 {
			return fmt.Errorf("%d bytes, %v; want 1000", n, err)
		}
		return nil
	}},
	{"download left unread", func(l *lab.Lab, server string, i int) error {
		c, err := l.Dial(l.Gateway, "tcp", hostPort(server, "7003"), 3*time.Second)
		if err != nil {
			return err
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "%d %d\n", 8<<20, i+1)
		_, err = io.ReadFull(c, make([]byte, 4096))
		c.Close() // unread data: the kernel resets
		return err
	}},
	{"upstream refuses", func(l *lab.Lab, server string, i int) error {
		return wantRefused(l.Dial(l.Gateway, "tcp", hostPort(server, "7005"), 3*time.Second))
	}},
	{"rejected", func(l *lab.Lab, server string, i int) error {
		return wantRefused(l.Dial(l.Gateway, "tcp", hostPort(server, "7009"), 3*time.Second))
	}},
	{"denied", func(l *lab.Lab, server string, i int) error {
		c, err := l.Dial(l.Gateway, "tcp", hostPort(server, "7010"), 300*time.Millisecond)
		if err == nil {
			c.Close()
			return errors.New("connected, want a timeout")
		}
		if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
			return fmt.Errorf("%v, want a timeout", err)
		}
		return nil
	}},
	{"UDP session", func(l *lab.Lab, server string, i int) error {
		c, err := l.Dial(l.Gateway, "udp", hostPort(server, "7001"), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		msg := fmt.Sprintf("udp %d\n", i)
		for try := 0; ; try++ { // a datagram may be lost; retry a few times
			c.SetDeadline(time.Now().Add(500 * time.Millisecond))
			io.WriteString(c, msg)
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err == nil && string(buf[:n]) == msg {
				return nil
			}
			if try == 4 {
				return fmt.Errorf("no echo: %v", err)
			}
		}
	}},
}

// leakEcho opens a TCP flow to the echo service and echoes one line.
func leakEcho(l *lab.Lab, server string, i int) (net.Conn, *bufio.Reader, error) {
	c, err := l.Dial(l.Gateway, "tcp", hostPort(server, "7001"), 3*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	line := fmt.Sprintf("line %d\n", i)
	io.WriteString(c, line)
	br := bufio.NewReader(c)
	if got, err := br.ReadString('\n'); err != nil || got != line {
		c.Close()
		return nil, nil, fmt.Errorf("echo: %q %v", got, err)
	}
	return c, br, nil
}

func wantRefused(c net.Conn, err error) error {
	if err == nil {
		c.Close()
		return errors.New("connected, want connection refused")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%v, want connection refused", err)
	}
	return nil
}
