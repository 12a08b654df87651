//go:build !linux

package owner

import "net/netip"

// Locals is the set of this machine's addresses; only Linux tracks them so
// far.
type Locals struct{}

// WatchLocals returns an empty set.
func WatchLocals() (*Locals, error) { return &Locals{}, nil }

// Contains always reports false here: no flow gets an owner.
func (*Locals) Contains(netip.Addr) bool { return false }

// Close does nothing.
func (*Locals) Close() {}

// Refresh does nothing.
func (*Locals) Refresh() error { return nil }
