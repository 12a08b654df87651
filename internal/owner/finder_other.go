//go:build !linux

package owner

import "net/netip"

// Finder looks up socket owners; only Linux has them so far.
type Finder struct{}

// NewFinder returns a Finder that finds nothing.
func NewFinder() *Finder { return &Finder{} }

// Lookup always reports ErrNotFound here.
func (*Finder) Lookup(Proto, netip.AddrPort, netip.AddrPort) (Owner, error) {
	return Owner{}, ErrNotFound
}
