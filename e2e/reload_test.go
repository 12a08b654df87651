package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// reloadConfig is the gateway config of the reload tests with extra rules.
func reloadConfig(onReload, rules string) string {
	return fmt.Sprintf(routed("info", `policy:
  default: allow
  on_reload: %s
  rules:
    - {name: no-telnet, action: reject, proto: tcp, ports: [23]}
%s`), onReload, rules)
}

// reloadEvent waits for the n-th reload event (1-based) in log.
func reloadEvent(t *testing.T, log string, n int) event {
	t.Helper()
	return waitNth(t, log, func(e event) bool { return e.str("event") == "reload" && e["ok"] != nil }, n, "reload event")
}

func writeConfig(t *testing.T, path, config string) {
	t.Helper()
	// Written aside and renamed, as editors do: the watcher sees the whole
	// file at once.
	if err := os.WriteFile(path+".new", []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// TestReload: a rule added to the watched file refuses new flows once the
// reload event is logged, while a transfer started before it goes on and
// completes with the right hash (on_reload: keep); a file with an error
// keeps the running policy and says where the error is, from the watcher
// and from "tunwall reload"; so does a file cut to zero bytes; "tunwall
// reload" of a fixed file brings the change back.
func TestReload(t *testing.T) {
	l := routedLab(t, "twr")
	path := filepath.Join(t.TempDir(), "tunwall.yaml")
	writeConfig(t, path, reloadConfig("keep", ""))
	tw := launchFile(t, l, path)
	web := hostPort(lab.ServerV4, "8080")
	wantOK(t, probe(t, l, l.Gateway, 0, "tcp", web), "tcp 8080 before the reload")

	// A transfer that spans the reload: the client reads the first MiB,
	// then holds the rest back (TCP flow control stalls the server) until
	// the new policy is in force.
	const size = 64 << 20
	seed := uint64(time.Now().UnixNano())
	c, err := l.Dial(l.Gateway, "tcp", hostPort(lab.ServerV4, "7003"), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(c, "%d %d\n", size, seed)
	h := sha256.New()
	if _, err := io.CopyN(h, c, 1<<20); err != nil {
		t.Fatal(err)
	}

	start := time.Now()
	writeConfig(t, path, reloadConfig("keep", "    - {name: no-web, action: reject, proto: tcp, ports: [8080]}\n"))
	ev := reloadEvent(t, tw.Log, 1)
	t.Logf("file change to reload event: %v", time.Since(start).Round(time.Millisecond))
	if ev["ok"] != true || ev.str("trigger") != "file" || ev.num("rules") != 2 {
		t.Fatalf("reload event %v", ev)
	}
	if r := probe(t, l, l.Gateway, 0, "tcp", web); r.OK || r.Errno != "ECONNREFUSED" {
		t.Errorf("tcp 8080 after the reload: %+v, want ECONNREFUSED", r)
	}
	t.Logf("file change to the first refused flow: %v", time.Since(start).Round(time.Millisecond))
	wantVerdict(t, tw.Log, "tcp", web, "reject", "no-web")
	n, err := io.Copy(h, c)
	if err != nil || n != size-1<<20 || hex.EncodeToString(h.Sum(nil)) != streamHash(seed, size) {
		t.Errorf("transfer across the reload: %d more bytes (%v), hash match %v", n, err, hex.EncodeToString(h.Sum(nil)) == streamHash(seed, size))
	}

	// A broken file: the running policy stays, the error has its position.
	broken := reloadConfig("keep", "    - {name: no-web, action: reject, proto: tcp, ports: [80800]}\n")
	writeConfig(t, path, broken)
	ev = reloadEvent(t, tw.Log, 2)
	if ev["ok"] != false || !strings.Contains(ev.str("error"), path+":9:") || !strings.Contains(ev.str("error"), "80800") {
		t.Errorf("reload of a broken file: %v, want ok false and an error at %s:9", ev, path)
	}
	if r := probe(t, l, l.Gateway, 0, "tcp", web); r.OK || r.Errno != "ECONNREFUSED" {
		t.Errorf("tcp 8080 after a failed reload: %+v, want the old policy's ECONNREFUSED", r)
	}
	out, err := l.Run(l.Gateway, filepath.Join(bin, "tunwall"), "reload", "-c", path)
	if code := exitCode(err); code != 2 || !strings.Contains(out, path+":9:") {
		t.Errorf("tunwall reload of the broken file: exit %d, output %q; want 2 and the error", code, out)
	}

	// Cut to zero bytes in place, as a failed write leaves it: not read as
	// "deny, no rules"; the running policy stays.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	ev = reloadEvent(t, tw.Log, 4) // 3 was "tunwall reload" of the broken file
	if ev["ok"] != false || ev.str("trigger") != "file" || !strings.Contains(ev.str("error"), path+": the file has 0 bytes") {
		t.Errorf("reload of a file cut to 0 bytes: %v, want ok false and the reason", ev)
	}
	wantOK(t, probe(t, l, l.Gateway, 0, "tcp", hostPort(lab.ServerV4, "7001")), "tcp 7001 after a file was cut to 0 bytes")
	if r := probe(t, l, l.Gateway, 0, "tcp", web); r.OK || r.Errno != "ECONNREFUSED" {
		t.Errorf("tcp 8080 after a file was cut to 0 bytes: %+v, want the old policy's ECONNREFUSED", r)
	}

	// Fixed, and reloaded by command.
	writeConfig(t, path+".fixed", reloadConfig("keep", ""))
	os.Rename(path+".fixed", path)
	out, err = l.Run(l.Gateway, filepath.Join(bin, "tunwall"), "reload", "-c", path)
	if err != nil || !strings.Contains(out, "reloaded: tunwall (pid ") {
		t.Errorf("tunwall reload: %v, output %q", err, out)
	}
	wantOK(t, probe(t, l, l.Gateway, 0, "tcp", web), "tcp 8080 after the rule is gone")
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatalf("tunwall exit after SIGTERM: %v", err)
	}
	if out, err := l.Run(l.Gateway, filepath.Join(bin, "tunwall"), "reload", "-c", path); exitCode(err) != 1 || !strings.Contains(out, "no tunwall running") {
		t.Errorf("tunwall reload with none running: exit %d, output %q", exitCode(err), out)
	}
}

// TestReloadReevaluate: with on_reload: reevaluate, a running flow the new
// policy refuses is closed with reason policy; connections made while
// reloads happen (SIGHUP, ten times) all succeed.
func TestReloadReevaluate(t *testing.T) {
	l := routedLab(t, "twv")
	path := filepath.Join(t.TempDir(), "tunwall.yaml")
	writeConfig(t, path, reloadConfig("reevaluate", ""))
	tw := launchFile(t, l, path)

	// Connections while reloads happen: after each SIGHUP, five echo
	// connections one after another, the first while the new policy is
	// being loaded.
	echo := hostPort(lab.ServerV4, "7001")
	worked := 0
	for i := 1; i <= 10; i++ {
		tw.Cmd.Process.Signal(syscall.SIGHUP)
		for range 5 {
			if err := echoOnce(l, echo); err != nil {
				t.Errorf("connection during reload %d: %v", i, err)
				continue
			}
			worked++
		}
		if ev := reloadEvent(t, tw.Log, i); ev["ok"] != true || ev.str("trigger") != "signal" || ev.num("closed") != 0 {
			t.Fatalf("reload %d: %v", i, ev)
		}
	}
	t.Logf("%d of 50 connections during ten reloads worked", worked)

	// A held flow, then a policy that refuses it.
	c, err := l.Dial(l.Gateway, "tcp", echo, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "before\n"); err != nil {
		t.Fatal(err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "before\n" {
		t.Fatalf("echo before the reload: %q %v", line, err)
	}
	writeConfig(t, path, reloadConfig("reevaluate", "    - {name: no-echo, action: deny, proto: tcp, ports: [7001]}\n"))
	// Flows of the echo connections above that are still closing count
	// too; the held one must be among those closed.
	if ev := reloadEvent(t, tw.Log, 11); ev["ok"] != true || ev.num("closed") < 1 {
		t.Fatalf("reload with the flow running: %v, want at least 1 closed", ev)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the refused flow still works after the reload")
	}
	src, dst := c.LocalAddr().String(), c.RemoteAddr().String()
	if e := waitEvent(t, tw.Log, flowEvent("close", src, dst)); e.str("reason") != "policy" {
		t.Errorf("close event reason %q, want policy", e.str("reason"))
	}
}

// echoOnce connects from the gateway namespace, sends a byte and reads it
// back.
func echoOnce(l *lab.Lab, addr string) error {
	c, err := l.Dial(l.Gateway, "tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	return echoByte(c)
}

// exitCode returns a command's exit status (0 for nil).
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// TestLogRotation renames the log file as logrotate does and sends
// SIGHUP: tunwall writes on to a new file at the old path; the renamed one
// keeps what came before.
func TestLogRotation(t *testing.T) {
	need(t)
	dir := t.TempDir()
	flows := filepath.Join(dir, "flows.log")
	tw := launch(t, lb, "tun: {name: tw0}\nlog: {format: json, output: "+flows+"}\npolicy: {default: allow}\n")
	waitEvent(t, flows, func(e event) bool { return e.str("event") == "ready" })
	if err := os.Rename(flows, flows+".1"); err != nil {
		t.Fatal(err)
	}
	tw.Cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(flows); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new %s 5 s after SIGHUP", flows)
		}
	}
	reopened := waitEvent(t, flows, func(e event) bool { return e.str("event") == "log" })
	if reopened.str("file") != flows {
		t.Errorf("log event %v, want file %s", reopened, flows)
	}
	waitEvent(t, flows, func(e event) bool { return e.str("event") == "reload" && e["ok"] == true })
	for _, e := range readEvents(t, flows+".1") {
		if ev := e.str("event"); ev == "reload" || ev == "log" {
			t.Errorf("the rotated file got %v, logged after the rotation", e)
		}
	}
	if err := tw.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, flows, func(e event) bool { return e.str("event") == "stop" })
}
