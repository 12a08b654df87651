package owner

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// sock_diag request and answer layout (linux/inet_diag.h). Numbers in
// inet_diag_sockid are big-endian (ports, addresses) or host order (the
// interface, the cookie); everything else is host order.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	diagReqLen       = 56 // struct inet_diag_req_v2
	diagMsgLen       = 72 // struct inet_diag_msg
	diagNoCookie     = 0xffffffff
)

// diag asks the kernel for one socket by its exact addresses over a
// NETLINK_SOCK_DIAG socket kept open between lookups. Unlike a dump, an
// exact request is a hash lookup in the kernel: microseconds however many
// sockets the machine has.
type diag struct {
	mu  sync.Mutex // one request at a time on fd
	fd  int        // -1 until first use
	seq uint32
	buf []byte
}

func newDiag() *diag { return &diag{fd: -1, buf: make([]byte, 8192)} }

// lookup returns the uid and inode of the socket with local address local
// talking to remote. TCP sockets match exactly; a UDP socket that is not
// connected matches on its local address, as the kernel would deliver a
// datagram from remote to it.
func (d *diag) lookup(p Proto, local, remote netip.AddrPort) (uid uint32, inode uint64, err error) {
	l, r := local.Addr().Unmap(), remote.Addr().Unmap()
	if l.Is4() != r.Is4() {
		return 0, 0, ErrNotFound
	}
	family, proto := uint8(unix.AF_INET6), uint8(unix.IPPROTO_TCP)
	if l.Is4() {
		family = unix.AF_INET
	}
	src, dst := local, remote
	if p == UDP {
		proto = unix.IPPROTO_UDP
		// The kernel's UDP lookup takes the pair in packet order: the
		// peer as source, the socket's own address as destination.
		src, dst = remote, local
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fd < 0 {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
		if err != nil {
			return 0, 0, fmt.Errorf("owner: sock_diag socket: %w", err)
		}
		d.fd = fd
	}
	d.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], d.seq)
	b := req[unix.NLMSG_HDRLEN:]
	b[0], b[1] = family, proto
	ne.PutUint32(b[4:], 0xffffffff) // every state
	putSockID(b[8:], src, dst)
	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		d.reset()
		return 0, 0, fmt.Errorf("owner: sock_diag request: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			d.reset()
			return 0, 0, fmt.Errorf("owner: sock_diag answer: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(d.buf[:n])
		if err != nil {
			d.reset()
			return 0, 0, fmt.Errorf("owner: sock_diag answer: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != d.seq {
				continue // the answer to an abandoned request
			}
			switch m.Header.Type {
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return 0, 0, errors.New("owner: sock_diag: short error message")
				}
				errno := -int32(ne.Uint32(m.Data))
				if errno == 0 {
					continue
				}
				if unix.Errno(errno) == unix.ENOENT {
					return 0, 0, ErrNotFound
				}
				return 0, 0, fmt.Errorf("owner: sock_diag: %w", unix.Errno(errno))
			case sockDiagByFamily:
				if len(m.Data) < diagMsgLen {
					return 0, 0, errors.New("owner: sock_diag: short answer")
				}
				return ne.Uint32(m.Data[64:]), uint64(ne.Uint32(m.Data[68:])), nil
			}
		}
	}
}

// putSockID writes struct inet_diag_sockid: ports and addresses in network
// order, no interface, and "no cookie".
func putSockID(b []byte, src, dst netip.AddrPort) {
	binary.BigEndian.PutUint16(b[0:], src.Port())
	binary.BigEndian.PutUint16(b[2:], dst.Port())
	putAddr(b[4:20], src.Addr().Unmap())
	putAddr(b[20:36], dst.Addr().Unmap())
	binary.NativeEndian.PutUint32(b[40:], diagNoCookie)
	binary.NativeEndian.PutUint32(b[44:], diagNoCookie)
}

func putAddr(b []byte, a netip.Addr) {
	if a.Is4() {
		v := a.As4()
		copy(b, v[:])
		return
	}
	v := a.As16()
	copy(b, v[:])
}

// reset drops a socket that may hold a half-read answer.
func (d *diag) reset() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
}
