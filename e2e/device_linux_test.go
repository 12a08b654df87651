package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDeviceNotificationsLost: while tunwall cannot read (stopped), its
// device is set down and up again, which takes away the device's routes
// and IPv6 addresses, and a burst of other links' changes overflows what
// the kernel keeps of its link notifications. tunwall learns that some
// were lost, follows the device again, reports it resumed, and restores
// its addresses and routes: traffic flows for both families.
func TestDeviceNotificationsLost(t *testing.T) {
	l, tw, before := deviceLab(t, "twdl")
	v4, v6 := sprayTargets[0], sprayTargets[1]
	pid := tw.Cmd.Process.Pid
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err != nil || strings.TrimSpace(string(comm)) != "tunwall" {
		t.Fatalf("process %d is %q (%v), want tunwall itself", pid, comm, err)
	}

	// Hundreds of links made and deleted: far more notifications than a
	// socket's default receive buffer holds (about a hundred).
	var batch strings.Builder
	for i := range 200 {
		fmt.Fprintf(&batch, "link add twdl%da type veth peer name twdl%db\n", i, i)
	}
	for i := range 200 {
		fmt.Fprintf(&batch, "link del twdl%da\n", i)
	}
	batchFile := filepath.Join(t.TempDir(), "links")
	if err := os.WriteFile(batchFile, []byte(batch.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	defer resume()
	gatewayIP(t, l, "link", "set", "tw0", "down")
	gatewayIP(t, l, "link", "set", "tw0", "up")
	if got := globalAddrs(t, l, "tw0"); strings.Contains(got, ":") {
		t.Fatalf("tw0 kept its IPv6 addresses (%q) through down and up; the test needs them gone", got)
	}
	gatewayIP(t, l, "-batch", batchFile)
	resume()

	e := waitEvent(t, tw.Log, deviceEvent("resumed"))
	if e.str("level") != "warn" || e.str("error") != "" {
		t.Errorf("device resumed logged at %q (%s), want warn", e.str("level"), e.str("error"))
	}
	if after := globalAddrs(t, l, "tw0"); after != before {
		t.Errorf("tw0 has addresses %q after tunwall followed it again, want %q as before", after, before)
	}
	for _, dst := range []string{v4, v6} {
		wantOK(t, probe(t, l, l.Gateway, 0, "tcp", dst), "tcp to "+dst+" after tunwall followed its device again")
	}
	for _, e := range readEvents(t, tw.Log) {
		if e.str("event") == "device" && e.str("state") != "resumed" {
			t.Errorf("device event %v, want only resumed (the notifications were lost)", e)
		}
	}
	if err := tw.Stop(5 * time.Second); err != nil {
		log, _ := os.ReadFile(tw.Log)
		t.Errorf("tunwall stopped with %v\n%s", err, lastLines(log, 12))
	}
}
