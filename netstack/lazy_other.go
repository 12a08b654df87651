//go:build !linux

package netstack

import "net"

// lazyDatagrams returns c: reading a socket without a buffer at hand is
// done on Linux only.
func lazyDatagrams(c net.Conn) net.Conn { return c }

// followHops would have the socket's TTL follow the client's datagrams;
// the host dialer here sets no TTL at all.
func followHops(net.Conn, uint8, func() uint8) {}
