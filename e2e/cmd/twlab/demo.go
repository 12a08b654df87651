package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// demo runs tunwall with its embedded default configuration in a lab and
// walks through allowed and blocked flows, printing the gateway's log as
// it happens.
func demo(tunwall string) error {
	if why := lab.Supported(); why != "" {
		return fmt.Errorf("demo %s", why)
	}
	fmt.Print(demoIntro)
	l, err := lab.New(fmt.Sprintf("twd%d", os.Getpid()%10000))
	if err != nil {
		return err
	}
	defer l.Close()
	self, _ := os.Executable()
	srv := l.Cmd(l.Server, self, "serve", "tcp:80", "tcp:445", "tcp:22", "udp:53", "udp:9999")
	out, _ := srv.StdoutPipe()
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		return fmt.Errorf("lab services did not start: %v", err)
	}
	dir, err := os.MkdirTemp("", "tunwall-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logPath := filepath.Join(dir, "tunwall.log")
	tw, err := l.StartTunwall(tunwall, "", logPath, "tw0") // no -c: the embedded default
	if err != nil {
		return err
	}
	stopTail := tailLog(logPath)
	for _, s := range demoSteps(l) {
		time.Sleep(300 * time.Millisecond) // pace the story; the log keeps up on its own
		fmt.Printf("\n▶ %s\n", s.what)
		fmt.Printf("  client   │ %s\n", s.run())
	}
	time.Sleep(300 * time.Millisecond)
	fmt.Println("\n▶ tunwall explain: why a flow gets its verdict, without sending it")
	for _, args := range [][]string{{"tcp", lab.ClientV4, lab.ServerV4 + ":445"}, {"udp", lab.ClientV4, lab.ServerV4 + ":53"}} {
		b, _ := exec.Command(tunwall, append([]string{"explain"}, args...)...).CombinedOutput()
		fmt.Printf("  $ tunwall explain %s\n", strings.Join(args, " "))
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			fmt.Println("    " + strings.TrimLeft(line, " "))
		}
	}
	time.Sleep(300 * time.Millisecond)
	fmt.Println("\n▶ tunwall flows and tunwall denied: what is live now, and what was refused (with repeat counts)")
	for _, cmd := range []string{"flows", "denied"} {
		b, _ := l.Cmd(l.Gateway, tunwall, cmd).CombinedOutput()
		fmt.Printf("  $ tunwall %s\n", cmd)
		for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
			fmt.Println("    " + line)
		}
	}
	fmt.Println("\n▶ SIGTERM: open flows are closed, the TUN device and its routes disappear")
	if err := tw.Stop(10 * time.Second); err != nil {
		return err
	}
	time.Sleep(200 * time.Millisecond)
	stopTail()
	if _, err := l.Run(l.Gateway, "ip", "link", "show", "tw0"); err != nil {
		fmt.Println("  gateway  │ tw0 is gone")
	}
	fmt.Println("\nDone. The lab namespaces are being removed.")
	return nil
}

const demoIntro = `tunwall demo: three network namespaces on this machine

  client 10.77.1.2 ──veth── gateway (tunwall, embedded default policy) ──veth── server 10.77.2.2
  fd77:1::2                 traffic from the client is routed into tw0   fd77:2::2

The default policy allows web, DNS, NTP and ping, rejects legacy file
sharing and remote-desktop ports, and rejects everything else.
`

type demoStep struct {
	what string
	run  func() string
}

func demoSteps(l *lab.Lab) []demoStep {
	return []demoStep{
		{"HTTP to the server (port 80): allowed by rule \"web\"", func() string { return httpGet(l, lab.ServerV4) }},
		{"the same over IPv6", func() string { return httpGet(l, lab.ServerV6) }},
		{"DNS-sized UDP datagram to port 53: allowed by rule \"dns\"", func() string { return udpTry(l, lab.ServerV4, "53") }},
		{"ping the server: allowed by rule \"ping\", a real reply", func() string { return pingOnce(l, lab.ServerV4) }},
		{"ping an address where no host lives: allowed; no reply is faked, the network's host unreachable comes back", func() string { return pingOnce(l, lab.Absent4) }},
		{"SMB (port 445): rejected by rule \"block-legacy-file-sharing\"", func() string { return tcpTry(l, lab.ServerV4, "445") }},
		{"SSH (port 22): no rule allows it, the default rejects it", func() string { return tcpTry(l, lab.ServerV4, "22") }},
		{"UDP to port 9999: rejected by default, the client sees ICMP port unreachable", func() string { return udpTry(l, lab.ServerV4, "9999") }},
	}
}

func httpGet(l *lab.Lab, host string) string {
	c, err := l.Dial(l.Client, "tcp", net.JoinHostPort(host, "80"), 2*time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	b, _ := io.ReadAll(c)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return fmt.Sprintf("%s … %q", strings.TrimSpace(lines[0]), lines[len(lines)-1])
}

func tcpTry(l *lab.Lab, host, port string) string {
	c, err := l.Dial(l.Client, "tcp", net.JoinHostPort(host, port), 2*time.Second)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return "connection refused (TCP RST) — the client fails fast"
		}
		return "error: " + err.Error()
	}
	c.Close()
	return "connected"
}

func udpTry(l *lab.Lab, host, port string) string {
	c, err := l.Dial(l.Client, "udp", net.JoinHostPort(host, port), time.Second)
	if err != nil {
		return "error: " + err.Error()
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	c.Write([]byte("example.test? A"))
	b := make([]byte, 512)
	n, err := c.Read(b)
	switch {
	case err == nil:
		return fmt.Sprintf("reply: %q", b[:n])
	case errors.Is(err, syscall.ECONNREFUSED):
		return "ICMP port unreachable (connection refused)"
	}
	return "no reply: " + err.Error()
}

func pingOnce(l *lab.Lab, host string) string {
	out, err := l.Run(l.Client, "ping", "-n", "-c", "1", "-W", "5", host)
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "Unreachable") {
			return strings.TrimSpace(line)
		}
		if strings.Contains(line, "bytes from") || strings.Contains(line, "packets transmitted") {
			if err == nil || !strings.Contains(line, "bytes from") {
				return strings.TrimSpace(line)
			}
		}
	}
	return strings.TrimSpace(out)
}

// tailLog prints the gateway's log events as they are written, until the
// returned function is called.
func tailLog(path string) func() {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		f, err := os.Open(path)
		if err != nil {
			return
		}
		defer f.Close()
		r := bufio.NewReader(f)
		var partial string
		for {
			line, err := r.ReadString('\n')
			partial += line
			if err == nil {
				printEvent(partial)
				partial = ""
				continue
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-finished }
}

func printEvent(line string) {
	var e map[string]any
	if json.Unmarshal([]byte(line), &e) != nil {
		fmt.Printf("  tunwall  │ %s", line)
		return
	}
	s := func(k string) string { v, _ := e[k].(string); return v }
	n := func(k string) int64 { v, _ := e[k].(float64); return int64(v) }
	flow := fmt.Sprintf("%-4s %s → %s", s("proto"), s("src"), s("dst"))
	switch s("event") {
	case "verdict":
		fmt.Printf("  tunwall  │ %-6s %s  rule %s\n", s("action"), flow, s("rule"))
	case "close":
		fmt.Printf("  tunwall  │ close  %s  out %d B, in %d B, %d ms, %s\n", flow, n("bytes_out"), n("bytes_in"), n("duration_ms"), s("reason"))
	case "start", "ready", "stop":
		fmt.Printf("  tunwall  │ %s (%s)\n", s("message"), s("event"))
	default:
		fmt.Printf("  tunwall  │ %s %s\n", s("event"), s("message"))
	}
}
