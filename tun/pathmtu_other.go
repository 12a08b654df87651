//go:build !linux

package tun

import "net/netip"

// routeLookup has nothing to hold on this platform.
type routeLookup struct{}

func (routeLookup) close() {}

// PathMTU returns 0 (unknown) on this platform.
func (d *Device) PathMTU(to, from netip.Addr) int { return 0 }
