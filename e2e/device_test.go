package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestDeviceDownUpDeleted: someone sets tunwall's device down, up again,
// then deletes it. Down, the kernel drops the routes into the TUN and the
// strict backstop keeps traffic in; up again, tunwall restores the
// device's addresses and routes and traffic flows; deleted, tunwall stops
// with exit status 1 and, as after a crash, leaves the backstop in place.
func TestDeviceDownUpDeleted(t *testing.T) {
	l, tw, before := deviceLab(t, "twd")
	v4, v6 := sprayTargets[0], sprayTargets[1]
	ip := func(args ...string) { gatewayIP(t, l, args...) }
	addrs := func() string { return globalAddrs(t, l, "tw0") }

	ip("link", "set", "tw0", "down")
	if e := waitEvent(t, tw.Log, deviceEvent("down")); e.str("level") != "warn" {
		t.Errorf("device down logged at %q, want warn", e.str("level"))
	}
	for _, dst := range []string{v4, v6} {
		if r := probe(t, l, l.Gateway, 0, "tcp", dst); r.OK || r.Errno != "EHOSTUNREACH" {
			t.Errorf("tcp to %s with the device down: %+v, want no route to host (the backstop)", dst, r)
		}
	}

	ip("link", "set", "tw0", "up")
	if e := waitEvent(t, tw.Log, deviceEvent("up")); e.str("level") != "info" {
		t.Errorf("device up logged at %q (%s), want info", e.str("level"), e.str("error"))
	}
	if after := addrs(); after != before {
		t.Errorf("tw0 has addresses %q after coming up again, want %q as before", after, before)
	}
	for _, dst := range []string{v4, v6} {
		wantOK(t, probe(t, l, l.Gateway, 0, "tcp", dst), "tcp to "+dst+" after the device came up again")
		wantVerdict(t, tw.Log, "tcp", dst, "allow", "default")
	}

	ip("link", "del", "tw0")
	select {
	case <-tw.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("tunwall still runs 10 s after its device was deleted")
	}
	if err := tw.Stop(time.Second); err == nil || !strings.Contains(err.Error(), "exit status 1") {
		t.Errorf("tunwall ended with %v, want exit status 1", err)
	}
	waitEvent(t, tw.Log, deviceEvent("deleted"))
	stop := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "stop" })
	if !strings.Contains(stop.str("error"), "tw0 was deleted") || stop["kept_blocked"] != true {
		t.Errorf("stop event %v, want the deletion as its error and kept_blocked", stop)
	}
	if r := probe(t, l, l.Gateway, 0, "tcp", v4); r.OK || r.Errno != "EHOSTUNREACH" {
		t.Errorf("tcp after the device was deleted: %+v, want no route to host (the backstop kept)", r)
	}
	tunwallDown(t, l)
	wantOK(t, probe(t, l, l.Gateway, 0, "tcp", v4), "after tunwall down")
}

// deviceLab starts tunwall in strict route-all mode in a lab of its own,
// sees traffic pass, and returns the lab, tunwall and tw0's global
// addresses, which must be IPv4 and IPv6 ones.
func deviceLab(t *testing.T, prefix string) (*lab.Lab, *lab.Tunwall, string) {
	t.Helper()
	l := routedLab(t, prefix)
	tw := launch(t, l, fmt.Sprintf(routeAllConfig, true))
	wantOK(t, probe(t, l, l.Gateway, 0, "tcp", sprayTargets[0]), "before")
	addrs := globalAddrs(t, l, "tw0")
	if !strings.Contains(addrs, ":") || !strings.Contains(addrs, ".") {
		t.Fatalf("tw0 has addresses %q, want IPv4 and IPv6 ones", addrs)
	}
	return l, tw, addrs
}

// deviceEvent matches the device event of a state.
func deviceEvent(state string) func(event) bool {
	return func(e event) bool { return e.str("event") == "device" && e.str("state") == state }
}

// gatewayIP runs ip with args in the lab's gateway namespace.
func gatewayIP(t *testing.T, l *lab.Lab, args ...string) {
	t.Helper()
	if out, err := l.Run(l.Gateway, append([]string{"ip"}, args...)...); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// globalAddrs lists the global addresses of dev in the gateway namespace.
func globalAddrs(t *testing.T, l *lab.Lab, dev string) string {
	t.Helper()
	out, err := l.Run(l.Gateway, "ip", "-o", "addr", "show", "dev", dev, "scope", "global")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(line); len(f) > 3 {
			kept = append(kept, f[3]) // the address/prefix
		}
	}
	return strings.Join(kept, " ")
}
