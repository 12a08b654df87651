package tun

import "testing"

func TestCarryOldSettings(t *testing.T) {
	plan := []Sysctl{{Path: "net/ipv4/conf/lan0/forwarding", Value: "1"}, {Path: "net/ipv6/conf/lan0/force_forwarding", Value: "1"}}
	old := []Sysctl{
		{Path: "net/ipv4/conf/lan0/forwarding", Value: "1", Old: "0"},
		{Path: v6AllForwarding, Value: "1", Old: "0"}, // an older kernel's fallback
		{Path: "net/ipv4/conf/lan9/forwarding", Value: "1", Old: "0"},
	}
	got := carryOld(plan, old)
	if got[0].Old != "0" || got[1].Old != "0" {
		t.Errorf("carryOld = %+v: the host's original values must survive a restart", got)
	}
	dropped := droppedSysctls(old, got[:1])
	if len(dropped) != 2 || dropped[1].Path != "net/ipv4/conf/lan9/forwarding" {
		t.Errorf("droppedSysctls = %+v", dropped)
	}
}
