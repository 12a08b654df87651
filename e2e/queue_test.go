package e2e

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// burstClients is how many clients connect, send a byte, read it back and
// reset, over and over, in TestQueueLength. Each has at most a few
// packets on their way to tunwall at once (a SYN and its resends, or the
// ACK and request, or the last ACK, the RST and the next SYN), so 400
// stay within the default queue of 4096 however slow tunwall is, and
// overflow the kernel's own 500.
const burstClients = 400

// TestQueueLength: tunwall gives its device the queue tun.queue_length
// asks for (default 4096). With the default, hundreds of clients
// connecting at once lose no packet on the way to tunwall, and every
// flow they leave ends: none waits for a reset that was lost.
func TestQueueLength(t *testing.T) {
	l := routedLab(t, "twq")
	sock := filepath.Join(t.TempDir(), "control.sock")
	tw := launch(t, l, fmt.Sprintf(routed("info", "control: {socket: %s}\npolicy: {default: allow}\n"), sock))
	if q := deviceStat(t, l, "tx_queue_len"); q != 4096 {
		t.Fatalf("the device's queue holds %d packets, want the default 4096", q)
	}
	metrics := unixMetrics(t, sock)
	dropped := deviceStat(t, l, "statistics/tx_dropped")

	out, err := l.Run(l.Gateway, filepath.Join(bin, "twlab"), "crr", hostPort(lab.ServerV4, "7001"), fmt.Sprint(burstClients), "2")
	var load struct{ Done, Failed int }
	if err != nil || json.Unmarshal([]byte(out), &load) != nil || load.Done == 0 {
		t.Fatalf("twlab crr: %v %q", err, out)
	}
	t.Logf("%d clients: %s", burstClients, strings.TrimSpace(out))
	if load.Failed != 0 {
		t.Errorf("%d connections failed; tunwall's log has %s", load.Failed, unusual(readEvents(t, tw.Log)))
	}
	if d := deviceStat(t, l, "statistics/tx_dropped") - dropped; d != 0 {
		t.Errorf("the device dropped %d packets on their way to tunwall", d)
	}
	// Every flow ends once its client's RST is in (the relay then closes
	// upstream); one whose RST was lost would stay until tcp_idle.
	deadline := time.Now().Add(20 * time.Second)
	for m := metrics(); active(m) != 0; m = metrics() {
		if time.Now().After(deadline) {
			t.Fatalf("%v flows still open 20 s after the load", active(m))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := tw.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}

	// A queue length of the config's.
	tw = launch(t, l, routedTun("info", ", queue_length: 300", "policy: {default: allow}\n"))
	if q := deviceStat(t, l, "tx_queue_len"); q != 300 {
		t.Errorf("the device's queue holds %d packets, want 300 as configured", q)
	}
	if e := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "ready" }); e.num("queue_length") != 300 {
		t.Errorf("ready event: queue_length %v, want 300", e["queue_length"])
	}
}

// deviceStat reads a number from tw0's sysfs directory in the gateway.
func deviceStat(t *testing.T, l *lab.Lab, name string) int {
	t.Helper()
	out, err := l.Run(l.Gateway, "cat", "/sys/class/net/tw0/"+name)
	var n int
	if _, serr := fmt.Sscan(strings.TrimSpace(out), &n); err != nil || serr != nil {
		t.Fatalf("tw0 %s: %v %v %q", name, err, serr, out)
	}
	return n
}

// unusual counts the events of a log that a load whose flows all work
// does not make: refusals by limit, closes with an error, and warnings and
// errors by event.
func unusual(evs []event) string {
	counts := map[string]int{}
	for _, e := range evs {
		switch {
		case e.str("event") == "refused":
			counts["refused "+e.str("limit")]++
		case e.str("event") == "close" && e.str("error") != "":
			counts["close "+e.str("reason")+": "+e.str("error")]++
		case e.str("level") == "warn" || e.str("level") == "error":
			counts[e.str("level")+" "+e.str("event")]++
		}
	}
	return fmt.Sprint(counts)
}
