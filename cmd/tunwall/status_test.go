package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunwall/tunwall/tun"
)

// TestFindRunning: the status files name the running tunwalls of this
// network namespace. Records of ended processes, of other namespaces,
// without a socket, or unreadable are passed over; with more than one
// tunwall running, -c FILE picks the one started with that file.
func TestFindRunning(t *testing.T) {
	pid := os.Getpid()
	start := tun.ProcessStart(pid)
	if start == 0 {
		t.Skip("process start times are not known on this platform")
	}
	dir := t.TempDir()
	ns := netnsID()
	write := func(name string, r statusRecord) {
		b, _ := json.Marshal(r)
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("run-"+ns+"-a.json", statusRecord{PID: pid, Start: start, Config: "/etc/a.yaml", Socket: "/run/a.sock"})
	write("run-"+ns+"-gone.json", statusRecord{PID: pid, Start: start + 1, Config: "/etc/b.yaml", Socket: "/run/gone.sock"})
	write("run-1-a.json", statusRecord{PID: pid, Start: start, Config: "/etc/b.yaml", Socket: "/run/other-ns.sock"})
	write("run-"+ns+"-old.json", statusRecord{PID: pid, Start: start, Config: "/etc/b.yaml"})
	os.WriteFile(filepath.Join(dir, "run-"+ns+"-bad.json"), []byte("{"), 0o600)

	if r, err := findRunning(dir, "flows", ""); err != nil || r.Socket != "/run/a.sock" || r.PID != pid {
		t.Errorf("one running: %+v %v", r, err)
	}
	if r, err := findRunning(dir, "flows", "/etc/a.yaml"); err != nil || r.Socket != "/run/a.sock" {
		t.Errorf("-c /etc/a.yaml: %+v %v", r, err)
	}
	_, err := findRunning(dir, "flows", "/etc/b.yaml")
	if !errors.Is(err, errNotRunning) || !strings.Contains(err.Error(), "flows: no tunwall running with /etc/b.yaml") {
		t.Errorf("-c /etc/b.yaml: %v, want not running", err)
	}

	write("run-"+ns+"-b.json", statusRecord{PID: pid, Start: start, Config: "/etc/b.yaml", Socket: "/run/b.sock"})
	_, err = findRunning(dir, "stats", "")
	var usage usageError
	if !errors.As(err, &usage) || !strings.Contains(err.Error(), "stats: 2 tunwalls run") {
		t.Errorf("two running: %v, want a usage error naming 2", err)
	}
	if r, err := findRunning(dir, "stats", "/etc/b.yaml"); err != nil || r.Socket != "/run/b.sock" {
		t.Errorf("-c /etc/b.yaml with two running: %+v %v", r, err)
	}

	// A relative -c path is taken from the working directory.
	t.Chdir("/etc")
	if r, err := findRunning(dir, "stats", "a.yaml"); err != nil || r.Socket != "/run/a.sock" {
		t.Errorf("-c a.yaml in /etc: %+v %v", r, err)
	}

	_, err = findRunning(t.TempDir(), "reload", "")
	if !errors.Is(err, errNotRunning) || err.Error() != "reload: no tunwall running in this network namespace" {
		t.Errorf("none: %v", err)
	}
}
