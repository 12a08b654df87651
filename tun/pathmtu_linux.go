package tun

import (
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeLookup holds the netlink socket PathMTU asks on; one kept socket
// halves the cost of a lookup (to about 25 us) against a socket per
// request.
type routeLookup struct {
	mu  sync.Mutex
	h   *netlink.Handle // opened by the first lookup
	err error           // why it could not be opened, or net.ErrClosed
}

// PathMTU returns the MTU of the first hop this host forwards a packet
// from the device to to on, the packet coming from from: the route's mtu
// when it has one, else its interface's, whichever is smaller. It returns 0
// when no route is found. It costs two netlink round trips.
//
// The lookup is the one the kernel makes for such a packet, policy rules
// on the input interface included; where that fails (forwarding off, say)
// it falls back to the host's own route to to.
func (d *Device) PathMTU(to, from netip.Addr) int {
	l := &d.routes
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h == nil && l.err == nil {
		l.h, l.err = netlink.NewHandle(unix.NETLINK_ROUTE)
	}
	if l.err != nil {
		return 0
	}
	routes, err := l.h.RouteGetWithOptions(to.Unmap().AsSlice(), &netlink.RouteGetOptions{
		IifIndex: d.index,
		SrcAddr:  from.Unmap().AsSlice(),
	})
	if err != nil || len(routes) == 0 {
		if routes, err = l.h.RouteGet(to.Unmap().AsSlice()); err != nil || len(routes) == 0 {
			return 0
		}
	}
	r := routes[0]
	mtu := 0
	if link, err := l.h.LinkByIndex(r.LinkIndex); err == nil {
		mtu = link.Attrs().MTU
	}
	if r.MTU > 0 && (mtu == 0 || r.MTU < mtu) {
		mtu = r.MTU
	}
	return mtu
}

// close releases the lookup's socket.
func (l *routeLookup) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.h != nil {
		l.h.Close()
		l.h = nil
	}
	l.err = net.ErrClosed
}
