package tun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
)

const procSys = "/proc/sys/"

// The per-interface IPv6 forwarding switch exists since Linux 6.17; on
// older kernels forwarding is only global.
const (
	v6ForceForwarding = "/force_forwarding"
	v6AllForwarding   = "net/ipv6/conf/all/forwarding"
)

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(procSys + path)
	return strings.TrimSpace(string(b)), err
}

func writeSysctl(path, value string) error {
	if err := os.WriteFile(procSys+path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(path, "/", "."), value, err)
	}
	return nil
}

// applySysctls sets each setting, recording the value it found in Old
// (unless Old is already known from an earlier run). It returns the
// settings it changed, including those it changed before an error.
func applySysctls(in []Sysctl) ([]Sysctl, error) {
	var done []Sysctl
	for _, c := range in {
		if strings.HasSuffix(c.Path, v6ForceForwarding) {
			if _, err := os.Stat(procSys + c.Path); err != nil {
				c.Path = v6AllForwarding
			}
		}
		cur, err := readSysctl(c.Path)
		if err != nil {
			return done, fmt.Errorf("sysctl %s: %w", c.Path, err)
		}
		if c.IfStrict && !strictRPFilter(cur) {
			continue
		}
		if c.Old == "" {
			c.Old = cur
		}
		if cur != c.Value {
			if err := writeSysctl(c.Path, c.Value); err != nil {
				return done, err
			}
		}
		done = append(done, c)
	}
	return done, nil
}

// strictRPFilter reports whether reverse-path filtering on an interface
// whose own value is own is strict: the larger of it and "all" is 1.
func strictRPFilter(own string) bool {
	all, _ := readSysctl("net/ipv4/conf/all/rp_filter")
	return max(own, all) == "1"
}

// restoreSysctls puts back the values settings had before tunwall.
func restoreSysctls(cs []Sysctl) error {
	var errs error
	for i := len(cs) - 1; i >= 0; i-- {
		c := cs[i]
		if c.Old == "" {
			continue
		}
		if _, err := os.Stat(procSys + c.Path); err != nil {
			continue // the interface is gone, and its settings with it
		}
		errs = errors.Join(errs, writeSysctl(c.Path, c.Old))
	}
	return errs
}

// carryOld gives planned settings the original values an earlier run
// recorded: the current values are that run's, not the host's.
func carryOld(plan, old []Sysctl) []Sysctl {
	out := make([]Sysctl, 0, len(plan))
	for _, c := range plan {
		for _, o := range old {
			if o.Path == c.Path || strings.HasSuffix(c.Path, v6ForceForwarding) && o.Path == v6AllForwarding {
				c.Old = o.Old
			}
		}
		out = append(out, c)
	}
	return out
}

// droppedSysctls are an earlier run's settings this run does not keep.
func droppedSysctls(old, kept []Sysctl) []Sysctl {
	var out []Sysctl
	for _, o := range old {
		if !slices.ContainsFunc(kept, func(k Sysctl) bool { return k.Path == o.Path }) {
			out = append(out, o)
		}
	}
	return out
}

// checkInterfaces makes sure every interface a setting names exists.
func checkInterfaces(cs []Sysctl) error {
	for _, c := range cs {
		iface := filepath.Base(filepath.Dir(c.Path))
		if _, err := netlink.LinkByName(iface); err != nil {
			return fmt.Errorf("routing.from: interface %q: %w", iface, err)
		}
	}
	return nil
}
