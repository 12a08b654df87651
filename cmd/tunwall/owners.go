package main

import (
	"net/netip"

	"github.com/tunwall/tunwall/internal/owner"
	"github.com/tunwall/tunwall/policy"
)

// hostOwners finds the owners of flows that start on this machine: the
// sockets of local addresses, found through the kernel.
type hostOwners struct {
	locals *owner.Locals
	finder *owner.Finder
}

func (h hostOwners) Local(a netip.Addr) bool { return h.locals.Contains(a) }

func (h hostOwners) Lookup(p policy.Proto, src, dst netip.AddrPort) (policy.Owner, bool) {
	var op owner.Proto
	switch p {
	case policy.TCP:
		op = owner.TCP
	case policy.UDP:
		op = owner.UDP
	case policy.ICMP:
		op = owner.ICMP
	default:
		return policy.Owner{}, false
	}
	o, err := h.finder.Lookup(op, src, dst)
	if err != nil {
		return policy.Owner{}, false
	}
	return policy.Owner(o), true
}
