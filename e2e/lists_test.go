package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// TestListBlocks: a 100,000-line list (addresses, networks and hosts-file
// lines) loads at start, is reported in a list event, and a dst_list rule
// refuses the server's IPv4 address, which is one line deep inside it,
// while the server's IPv6 address, not listed, gets through; a
// domain_list rule on the same list answers its names NXDOMAIN; a change
// of the list file is loaded by itself.
func TestListBlocks(t *testing.T) {
	l := routedLab(t, "twk")
	gw := l.Gateway
	var b strings.Builder
	b.WriteString("# generated blocklist\n")
	for i := range 100_000 {
		switch {
		case i == 77_777:
			b.WriteString(lab.ServerV4 + "\n")
		case i%3 == 0:
			fmt.Fprintf(&b, "0.0.0.0 ads%d.tracker.example\n", i)
		case i%3 == 1:
			fmt.Fprintf(&b, "100.%d.%d.0/24\n", 64+i>>8&0x3f, i&0xff)
		default:
			fmt.Fprintf(&b, "2001:db8:%x::%x\n", i>>16, i&0xffff)
		}
	}
	list := filepath.Join(t.TempDir(), "block.txt")
	if err := os.WriteFile(list, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	tw := launch(t, l, fmt.Sprintf(routed("debug", `lists:
  block: {file: %s}
policy:
  default: allow
  rules:
    - {name: blocklist, action: reject, dst_list: [block]}
    - {name: blocknames, action: reject, domain_list: [block]}
`), list))
	t.Logf("started with the list in %v", time.Since(start).Round(time.Millisecond))
	ev := waitEvent(t, tw.Log, func(e event) bool { return e.str("event") == "list" })
	if ev.str("name") != "block" || ev.num("addresses") != 66_666 || ev.num("domains") != 33_334 || ev.num("skipped") != 0 {
		t.Errorf("list event %v, want block with 66666 addresses and 33334 domains", ev)
	}
	v4, v6 := hostPort(lab.ServerV4, "8080"), hostPort(lab.ServerV6, "8080")
	if r := probe(t, l, gw, 0, "tcp", v4); r.OK || r.Errno != "ECONNREFUSED" {
		t.Errorf("tcp to the listed %s: %+v, want ECONNREFUSED", v4, r)
	}
	wantVerdict(t, tw.Log, "tcp", v4, "reject", "blocklist")
	wantOK(t, probe(t, l, gw, 0, "tcp", v6), "tcp to the unlisted "+v6)
	wantVerdict(t, tw.Log, "tcp", v6, "allow", "default")

	// The hosts lines block their names: the last one in the file does not
	// resolve, a name not listed does.
	dns := hostPort(lab.ServerV6, "53")
	if r := resolveIn(t, l, gw, dns, "ads99999.tracker.example"); !r.OK || r.Rcode != "Non-Existent Domain" {
		t.Errorf("listed name: %+v, want NXDOMAIN", r)
	}
	if r := resolveIn(t, l, gw, dns, "ads99998.tracker.example"); !r.OK || r.Rcode != "No Error" || len(r.Addrs) != 1 {
		t.Errorf("unlisted name: %+v, want an answer", r)
	}

	// The list file is watched: without the server's line, it is reachable.
	writeConfig(t, list, strings.Replace(b.String(), lab.ServerV4+"\n", "", 1))
	if ev := reloadEvent(t, tw.Log, 1); ev["ok"] != true || ev.str("trigger") != "file" {
		t.Fatalf("reload after the list changed: %v", ev)
	}
	wantOK(t, probe(t, l, gw, 0, "tcp", v4), "tcp to "+v4+" once it left the list")
}
