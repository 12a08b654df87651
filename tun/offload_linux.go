package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// vnetWriter writes packets with a virtio-net header straight to the TUN
// file descriptor, so the kernel finishes checksums and segments large TCP
// packets.
//
// The write is a raw system call: writes to a TUN device never block, and
// a raw call keeps the Go scheduler from handing this thread's processor
// to another thread while the kernel delivers the packet (which, with many
// small packets, cost more than the delivery).
type vnetWriter struct {
	mu     sync.RWMutex // guards fd against close: writers hold it shared
	fd     int
	closed bool
}

const vnetHdrLen = 10 // sizeof(struct virtio_net_hdr)

// maxIovecs bounds the slices of one packet (gVisor builds packets from a
// few header and payload views).
const maxIovecs = 64

var errClosed = errors.New("tun closed")

func newVnetWriter(f *os.File) (*vnetWriter, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	w := &vnetWriter{}
	if err := rc.Control(func(fd uintptr) { w.fd = int(fd) }); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *vnetWriter) writeTCP(pkt [][]byte, l3Len, hdrLen, mss int) error {
	var hdr [vnetHdrLen]byte
	size := 0
	for _, s := range pkt {
		size += len(s)
	}
	hdr[0] = unix.VIRTIO_NET_HDR_F_NEEDS_CSUM
	if size-hdrLen > mss {
		hdr[1] = unix.VIRTIO_NET_HDR_GSO_TCPV4
		if len(pkt) > 0 && len(pkt[0]) > 0 && pkt[0][0]>>4 == 6 {
			hdr[1] = unix.VIRTIO_NET_HDR_GSO_TCPV6
		}
		binary.LittleEndian.PutUint16(hdr[4:], uint16(mss))
	}
	binary.LittleEndian.PutUint16(hdr[2:], uint16(hdrLen))
	binary.LittleEndian.PutUint16(hdr[6:], uint16(l3Len))
	binary.LittleEndian.PutUint16(hdr[8:], 16) // TCP checksum offset
	return w.writev(&hdr, pkt)
}

// writePlain writes one complete packet (checksums filled in, nothing for
// the kernel to finish) behind an all-zero virtio-net header.
func (w *vnetWriter) writePlain(pkt [][]byte) error {
	var hdr [vnetHdrLen]byte
	return w.writev(&hdr, pkt)
}

// writev writes hdr and the packet's slices in one raw system call.
func (w *vnetWriter) writev(hdr *[vnetHdrLen]byte, pkt [][]byte) error {
	var iov [maxIovecs]unix.Iovec
	n := 0
	iov[n].Base, iov[n].Len = &hdr[0], vnetHdrLen
	n++
	for _, s := range pkt {
		if len(s) == 0 {
			continue
		}
		if n == maxIovecs {
			return fmt.Errorf("write tun: packet in more than %d pieces", maxIovecs-1)
		}
		iov[n].Base = &s[0]
		iov[n].SetLen(len(s))
		n++
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return errClosed
	}
	for {
		_, _, errno := unix.RawSyscall(unix.SYS_WRITEV, uintptr(w.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			continue
		}
		return fmt.Errorf("write tun: %w", errno)
	}
}

// close stops further writes; the caller closes the file afterwards.
func (w *vnetWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}
