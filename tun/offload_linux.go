package tun

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// vnetWriter writes packets with a virtio-net header straight to the TUN
// file, so the kernel finishes checksums and segments large TCP packets.
type vnetWriter struct {
	file *os.File
}

const vnetHdrLen = 10 // sizeof(struct virtio_net_hdr)

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

	var iov [8][]byte
	vec := append(iov[:0], hdr[:])
	vec = append(vec, pkt...)
	rc, err := w.file.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		_, werr = unix.Writev(int(fd), vec)
		return werr != unix.EAGAIN
	})
	if err != nil {
		return fmt.Errorf("write tun: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("write tun: %w", werr)
	}
	return nil
}
