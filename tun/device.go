package tun

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Device is an open, configured TUN device. It embeds the wireguard device,
// so Read and Write move batches of up to BatchSize packets:
//
//   - Read: len(sizes) must be >= len(bufs); each buffer must hold
//     offset+MTU bytes.
//   - Write: offset must be >= Offset; buffers with spare capacity let the
//     device coalesce TCP/UDP segments of one flow before writing them.
type Device struct {
	wgtun.Device
	name      string
	index     int // interface index, for route lookups
	mtu       int
	addresses []netip.Prefix // given at Open; Reconfigure restores them

	closeOnce sync.Once
	closeErr  error
	offload   offloadWriter // nil where the platform has no TSO writes
	routes    routeLookup   // PathMTU's
}

// Offset is the headroom Read and Write callers must leave at the start of
// every buffer (room for the virtio-net header on Linux).
const Offset = 16

// Name returns the interface name.
func (d *Device) Name() string { return d.name }

// MTU returns the interface MTU.
func (d *Device) MTU() int { return d.mtu }

// Close removes the device. It is safe to call more than once.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		if d.offload != nil {
			d.offload.close() // no raw write may race the descriptor's reuse
		}
		d.routes.close()
		// The wireguard device's own link listener ends, and closes the
		// pipe Close writes to, when its netlink socket overflows (heavy
		// interface churn); Close then reports that pipe as closed, though
		// it did close the device.
		if err := d.Device.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			d.closeErr = fmt.Errorf("close tun %s: %w", d.name, err)
		}
	})
	return d.closeErr
}

// CanOffloadTCP reports whether WriteTCPOffload is available.
func (d *Device) CanOffloadTCP() bool { return d.offload != nil }

// WriteTCPOffload writes one IPv4 or IPv6 packet carrying a TCP segment
// whose checksum field holds only the pseudo-header sum (the kernel completes
// it). When the payload exceeds mss the kernel splits the packet into
// mss-sized segments. pkt is the packet as consecutive slices; l3Len is the
// IP header length and hdrLen the IP plus TCP header length. It must only
// be called when CanOffloadTCP is true.
func (d *Device) WriteTCPOffload(pkt [][]byte, l3Len, hdrLen, mss int) error {
	return d.offload.writeTCP(pkt, l3Len, hdrLen, mss)
}

// WritePacket writes one complete IPv4 or IPv6 packet, given as consecutive
// slices, in a single system call without copying it. It must only be
// called when CanOffloadTCP is true.
func (d *Device) WritePacket(pkt [][]byte) error {
	return d.offload.writePlain(pkt)
}

// offloadWriter writes segments with kernel checksum and segmentation
// offload. Implemented per platform.
type offloadWriter interface {
	writeTCP(pkt [][]byte, l3Len, hdrLen, mss int) error
	writePlain(pkt [][]byte) error
	close()
}
