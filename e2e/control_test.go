package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
	"github.com/tunwall/tunwall/internal/control"
)

// TestControlAPI: the control socket is the owner's only; tunwall flows
// shows a live flow with its rule and bytes, tunwall kill closes it (close
// reason closed), tunwall denied shows a refusal with its rule, stats and
// policy answer, the commands find a socket outside /run/tunwall without
// being told, and bad requests get JSON errors.
func TestControlAPI(t *testing.T) {
	l := routedLab(t, "twc")
	gw := l.Gateway
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // only the socket's own mode keeps others out
	os.Chmod(filepath.Dir(dir), 0o755)
	sock := filepath.Join(dir, "control.sock")
	tw := launch(t, l, fmt.Sprintf(routed("info", `control: {socket: %s}
policy:
  default: allow
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
`), sock))
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("control socket %v %v, want a 0600 socket", fi.Mode(), err)
	}
	tunwall := filepath.Join(bin, "tunwall")
	run := func(args ...string) (string, error) {
		return l.Run(gw, append([]string{tunwall}, args...)...)
	}

	// A live flow with some bytes each way, listed once its owner is
	// known (the lookup runs beside the flow, and may end after the echo).
	c, br := echoFlow(t, l, gw, "hello\n")
	src := c.LocalAddr().String()
	var mine control.Flow
	deadline := time.Now().Add(5 * time.Second)
	for mine.ID == 0 || mine.UID == nil {
		out, err := run("flows", "--json", "--socket", sock)
		var flows []control.Flow
		if err != nil || json.Unmarshal([]byte(out), &flows) != nil {
			t.Fatalf("tunwall flows --json: %v %q", err, out)
		}
		for _, f := range flows {
			if f.Src == src && f.BytesOut == 6 && f.BytesIn == 6 {
				mine = f
			}
		}
		if (mine.ID == 0 || mine.UID == nil) && time.Now().After(deadline) {
			t.Fatalf("flow %s with 6 bytes each way and its owner not listed: %q", src, out)
		}
	}
	if mine.Proto != "tcp" || mine.Dst != hostPort(lab.ServerV4, "7001") || mine.Rule != "default" || !mine.Enforced || mine.UID == nil {
		t.Errorf("listed flow %+v", mine)
	}
	// The table: a header, a row per flow, and their count.
	if out, err := run("flows", "--socket", sock); err != nil || !strings.Contains(out, src) {
		t.Errorf("tunwall flows (table): %v %q", err, out)
	} else if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) < 3 || lines[len(lines)-1] != countLine(len(lines)-2, "live flow") {
		t.Errorf("tunwall flows (table) does not end with the count of its rows: %q", out)
	}

	// Kill it.
	if out, err := run("kill", "--socket", sock, fmt.Sprint(mine.ID)); err != nil || !strings.Contains(out, "closed") {
		t.Fatalf("tunwall kill: %v %q", err, out)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the killed flow still works")
	}
	if e := waitEvent(t, tw.Log, flowEvent("close", src, c.RemoteAddr().String())); e.str("reason") != "closed" {
		t.Errorf("close reason %q, want closed", e.str("reason"))
	}
	if out, err := run("kill", "--socket", sock, fmt.Sprint(mine.ID)); exitCode(err) != 1 || !strings.Contains(out, "no live flow") {
		t.Errorf("kill of a gone flow: exit %d %q", exitCode(err), out)
	}
	if out, err := run("kill", "--socket", sock, "x"); exitCode(err) != 2 {
		t.Errorf("kill x: exit %d %q, want 2", exitCode(err), out)
	}

	// A refusal shows in denied, and as a rule hit.
	telnet := hostPort(lab.ServerV4, "23")
	probe(t, l, gw, 0, "tcp", telnet)
	if out, err := run("denied", "--socket", sock); err != nil || !strings.Contains(out, telnet) || !strings.Contains(out, "no-telnet") {
		t.Errorf("tunwall denied: %v %q", err, out)
	}
	client := control.NewClient(sock)
	var pol control.PolicyInfo
	if err := client.Do("GET", "/v1/policy", &pol); err != nil || len(pol.Rules) != 1 || pol.Rules[0].Name != "no-telnet" || pol.Rules[0].Hits != 1 || pol.DefaultHits == 0 {
		t.Errorf("GET /v1/policy: %+v %v", pol, err)
	}
	var stats map[string]uint64
	if err := client.Do("GET", "/v1/stats", &stats); err != nil || stats["packets_in"] == 0 {
		t.Errorf("GET /v1/stats: %v %v", stats, err)
	}
	// Without --socket the commands find it through its status file, which
	// names its socket (here one outside /run/tunwall), or by its file.
	config := filepath.Join(filepath.Dir(tw.Log), "tunwall.yaml")
	for _, args := range [][]string{{"stats"}, {"stats", "-c", config}} {
		if out, err := run(args...); err != nil || !strings.Contains(out, "flows_active") {
			t.Errorf("tunwall %s: %v %q", strings.Join(args, " "), err, out)
		}
	}
	var apiErr *control.APIError
	if err := client.Do("DELETE", "/v1/flows/abc", nil); !errors.As(err, &apiErr) || apiErr.Status != 400 {
		t.Errorf("DELETE /v1/flows/abc: %v", err)
	}
	// Someone else cannot use it.
	if out, err := l.Run(gw, "setpriv", "--reuid", "64101", "--regid", "64101", "--clear-groups", tunwall, "stats", "--socket", sock); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("stats as uid 64101: %v %q, want permission denied", err, out)
	}
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("control socket left after stop: %v", err)
	}
}

// TestControlGroup: with control.group the socket is 0660 and that
// group's members may use it; others still may not.
func TestControlGroup(t *testing.T) {
	l := routedLab(t, "twg")
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // only the socket's own mode keeps others out
	sock := filepath.Join(dir, "control.sock")
	launch(t, l, fmt.Sprintf(routed("info", "control: {socket: %s, group: nogroup}\npolicy: {default: allow}\n"), sock))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("control socket mode %v, want 0660", fi.Mode())
	}
	as := func(gid string) (string, error) {
		return l.Run(l.Gateway, "setpriv", "--reuid", "64101", "--regid", gid, "--clear-groups", filepath.Join(bin, "tunwall"), "stats", "--socket", sock)
	}
	if out, err := as("nogroup"); err != nil || !strings.Contains(out, "flows_active") {
		t.Errorf("stats as a member of nogroup: %v %q", err, out)
	}
	if out, err := as("64101"); err == nil || !strings.Contains(out, "permission denied") {
		t.Errorf("stats as a non-member: %v %q, want permission denied", err, out)
	}
}

// echoFlow opens a TCP flow from namespace ns to the lab's echo service
// (closed when the test ends) and, unless line is empty, echoes line once.
func echoFlow(t *testing.T, l *lab.Lab, ns, line string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := l.Dial(ns, "tcp", hostPort(lab.ServerV4, "7001"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(60 * time.Second))
	br := bufio.NewReader(c)
	if line != "" {
		io.WriteString(c, line)
		if got, err := br.ReadString('\n'); err != nil || got != line {
			t.Fatalf("echo: %q %v", got, err)
		}
	}
	return c, br
}

// countLine is how the CLI counts things: "1 live flow", "2 live flows".
func countLine(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
