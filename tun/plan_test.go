package tun

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tunwall/tunwall/policy"
)

func parse(t *testing.T, yaml string) *policy.Config {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func routing(t *testing.T, yaml string) policy.RoutingConfig { return parse(t, yaml).Routing }

func ruleLines(p Plan) string {
	var out []string
	for _, r := range p.Rules {
		out = append(out, r.String())
	}
	return strings.Join(out, "\n")
}

// The rules each routing configuration installs, as `ip rule` would list
// them (in order of priority, then of insertion).
func TestPlanRules(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"none routes nothing", "routing: {mode: none}", ""},
		{"route-all", "routing: {mode: all, exclude: [192.0.2.0/24]}", `
ipv4 pref 7470 fwmark 0x7475 lookup main
ipv6 pref 7470 fwmark 0x7475 lookup main
ipv4 pref 7471 fwmark 0x7475 unreachable
ipv6 pref 7471 fwmark 0x7475 unreachable
ipv4 pref 7472 iif tw0 lookup main
ipv6 pref 7472 iif tw0 lookup main
ipv4 pref 7473 to 169.254.0.0/16 lookup main
ipv6 pref 7473 to fe80::/10 lookup main
ipv4 pref 7473 to 192.0.2.0/24 lookup main
ipv4 pref 7474 lookup 7475
ipv6 pref 7474 lookup 7475`},
		{"split keeps link-local out of it", "routing: {mode: split, include: [10.1.0.0/16], table: 100}", `
ipv4 pref 7470 fwmark 0x7475 lookup main
ipv6 pref 7470 fwmark 0x7475 lookup main
ipv4 pref 7471 fwmark 0x7475 unreachable
ipv6 pref 7471 fwmark 0x7475 unreachable
ipv4 pref 7472 iif tw0 lookup main
ipv6 pref 7472 iif tw0 lookup main
ipv4 pref 7474 lookup 100
ipv6 pref 7474 lookup 100`},
		{"per-app", "routing: {mode: all, uids: [1000, \"2000-2999\"], from: [lan0]}\negress: {mark: 9}", `
ipv4 pref 7470 fwmark 0x9 lookup main
ipv6 pref 7470 fwmark 0x9 lookup main
ipv4 pref 7471 fwmark 0x9 unreachable
ipv6 pref 7471 fwmark 0x9 unreachable
ipv4 pref 7472 iif tw0 lookup main
ipv6 pref 7472 iif tw0 lookup main
ipv4 pref 7473 to 169.254.0.0/16 lookup main
ipv6 pref 7473 to fe80::/10 lookup main
ipv4 pref 7474 uidrange 1000-1000 lookup 7475
ipv6 pref 7474 uidrange 1000-1000 lookup 7475
ipv4 pref 7474 uidrange 2000-2999 lookup 7475
ipv6 pref 7474 uidrange 2000-2999 lookup 7475
ipv4 pref 7474 iif lan0 lookup 7475
ipv6 pref 7474 iif lan0 lookup 7475`},
		{"LAN gateway alone", "routing: {from: [lan0, lan1]}", `
ipv4 pref 7470 fwmark 0x7475 lookup main
ipv6 pref 7470 fwmark 0x7475 lookup main
ipv4 pref 7471 fwmark 0x7475 unreachable
ipv6 pref 7471 fwmark 0x7475 unreachable
ipv4 pref 7472 iif tw0 lookup main
ipv6 pref 7472 iif tw0 lookup main
ipv4 pref 7474 iif lan0 lookup 7475
ipv6 pref 7474 iif lan0 lookup 7475
ipv4 pref 7474 iif lan1 lookup 7475
ipv6 pref 7474 iif lan1 lookup 7475`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parse(t, tt.yaml+"\n")
			p := NewPlan(cfg.Routing, "tw0", cfg.Egress.Mark)
			if got := ruleLines(p); got != strings.TrimSpace(tt.want) {
				t.Errorf("rules:\n%s\nwant:\n%s", got, strings.TrimSpace(tt.want))
			}
		})
	}
}

func TestPlanRoutesAndBackstop(t *testing.T) {
	all := NewPlan(routing(t, "routing: {mode: all}\n"), "tw0", 1)
	if len(all.Through) != 2 || all.Through[0] != anyV4 || all.Through[1] != anyV6 {
		t.Errorf("route-all sends %v into the TUN, want both default routes", all.Through)
	}
	if len(all.Backstop) != 2 || all.Backstop[0].Dev != "" || all.Backstop[0].Metric != MetricBackstop {
		t.Errorf("strict route-all backstop = %v, want unreachable defaults at the largest metric", all.Backstop)
	}
	loose := NewPlan(routing(t, "routing: {mode: all, strict: false}\n"), "tw0", 1)
	if len(loose.Backstop) != 0 {
		t.Errorf("strict: false still installs a backstop: %v", loose.Backstop)
	}
	split := NewPlan(routing(t, "routing: {mode: split, include: [10.1.0.0/16, \"fd00::/8\"]}\n"), "tw0", 1)
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00::/8")}
	if len(split.Through) != 2 || split.Through[0] != want[0] || split.Through[1] != want[1] {
		t.Errorf("split sends %v into the TUN, want %v", split.Through, want)
	}
	if len(split.Backstop) != 2 || split.Backstop[1].To != want[1] {
		t.Errorf("strict split backstop = %v, want one per included CIDR", split.Backstop)
	}
	if len(all.Sysctls) != 0 || len(all.TunSysctls) != 0 {
		t.Errorf("route-all without from changes settings: %v %v", all.Sysctls, all.TunSysctls)
	}
	gw := NewPlan(routing(t, "routing: {from: [lan0]}\n"), "tw0", 1)
	var paths []string
	for _, c := range append(gw.Sysctls, gw.TunSysctls...) {
		paths = append(paths, c.Path+"="+c.Value)
	}
	wantPaths := "net/ipv4/conf/lan0/forwarding=1 net/ipv6/conf/lan0/force_forwarding=1 net/ipv4/conf/lan0/rp_filter=2 " +
		"net/ipv4/conf/tw0/forwarding=1 net/ipv6/conf/tw0/force_forwarding=1"
	if strings.Join(paths, " ") != wantPaths {
		t.Errorf("LAN gateway settings:\n%s\nwant:\n%s", strings.Join(paths, " "), wantPaths)
	}
}

func TestStateRecord(t *testing.T) {
	dir := t.TempDir()
	ns := Netns{Inode: 42, Cookie: 7}
	uids := policy.UIDRange{First: 1000, Last: 1999}
	s := &State{Netns: ns, PID: 12, Start: 34, Table: 7475, Tun: "tw0",
		Rules:   []Rule{{Family: 6, Priority: PrioSelector, UIDs: &uids, Table: 7475}},
		Routes:  []Route{{To: anyV4, Metric: MetricBackstop, Table: 7475}},
		Sysctls: []Sysctl{{Path: "net/ipv4/conf/lan0/forwarding", Value: "1", Old: "0"}}}
	if err := s.save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := loadStates(dir, ns, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("loadStates = %v, %v", got, err)
	}
	if strings.Join(got[0].items(), "\n") != strings.Join(s.items(), "\n") || got[0].Rules[0].UIDs.Last != 1999 {
		t.Errorf("round trip:\n%v\nwant:\n%v", got[0].items(), s.items())
	}
	if other, _ := loadStates(dir, ns, 100); len(other) != 0 {
		t.Errorf("table 100 found table 7475's record")
	}
	// A namespace that reuses the inode number is a different namespace:
	// the dead one's record is dropped, not applied.
	if got, err := loadStates(dir, Netns{Inode: 42, Cookie: 8}, 0); err != nil || len(got) != 0 {
		t.Errorf("a record of a dead namespace was loaded: %v %v", got, err)
	}
	if _, err := os.Stat(statePath(dir, ns, 7475)); err == nil {
		t.Error("the dead namespace's record was not removed")
	}
	os.WriteFile(filepath.Join(dir, "routing-42-9.json"), []byte("{"), 0o600)
	if _, err := loadStates(dir, ns, 0); err == nil || !strings.Contains(err.Error(), "is damaged") {
		t.Errorf("a damaged record: %v, want an error naming it", err)
	}
}
