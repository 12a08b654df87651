package e2e

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
	"golang.org/x/sys/unix"
)

// Other ICMP errors about a session's datagrams reach the client too, from
// the address they are about: here the gateway's neighbour solicitations
// for an address nobody has go unanswered (about three seconds). A
// connected UDP socket hears of such an error only with IP_RECVERR, through
// a kernel router as well; its error queue then holds the error, quoting
// the datagram.
func TestUDPErrorsPassedOn(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		addr       string
		typ, code  uint8
		level, opt int
	}{
		{lab.Absent4, 3, 1, unix.IPPROTO_IP, unix.IP_RECVERR},     // host unreachable
		{lab.Absent6, 1, 3, unix.IPPROTO_IPV6, unix.IPV6_RECVERR}, // address unreachable
	} {
		t.Run(tc.addr, func(t *testing.T) {
			t.Parallel()
			c, err := dialClient(t, "udp", net.JoinHostPort(tc.addr, "7001"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			rc, err := c.(syscall.Conn).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), tc.level, tc.opt, 1) })
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("anyone?")); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.EHOSTUNREACH) {
				t.Fatalf("read: %v, want EHOSTUNREACH", err)
			}
			var q queuedError
			rc.Control(func(fd uintptr) { q, err = readErrQueue(int(fd)) })
			if err != nil {
				t.Fatal(err)
			}
			if q.origin != unix.SO_EE_ORIGIN_ICMP && q.origin != unix.SO_EE_ORIGIN_ICMP6 || q.typ != tc.typ || q.code != tc.code ||
				q.from.String() != tc.addr || string(q.data) != "anyone?" {
				t.Errorf("queued error: %+v; want ICMP type %d code %d from %s quoting %q", q, tc.typ, tc.code, tc.addr, "anyone?")
			}
			assertVerdict(t, c.LocalAddr().String(), c.RemoteAddr().String(), "allow", "udp-absent")
		})
	}
}

// queuedError is an entry of a socket's error queue.
type queuedError struct {
	origin, typ, code uint8
	from              netip.Addr
	data              []byte // what the kernel hands back of the datagram
}

// readErrQueue takes the first entry off a socket's error queue. Its
// control message is a struct sock_extended_err (errno, origin, type,
// code, pad, info, data: 16 bytes) followed by the sender's sockaddr.
func readErrQueue(fd int) (queuedError, error) {
	buf, oob := make([]byte, 2048), make([]byte, 512)
	n, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
	if err != nil {
		return queuedError{}, fmt.Errorf("error queue: %w", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || len(msgs[0].Data) < 16 {
		return queuedError{}, fmt.Errorf("error queue: control messages %v (%v)", msgs, err)
	}
	d := msgs[0].Data
	q := queuedError{origin: d[4], typ: d[5], code: d[6], data: buf[:n]}
	switch sa := d[16:]; {
	case len(sa) >= 8 && binary.NativeEndian.Uint16(sa) == unix.AF_INET:
		q.from = netip.AddrFrom4([4]byte(sa[4:8]))
	case len(sa) >= 24 && binary.NativeEndian.Uint16(sa) == unix.AF_INET6:
		q.from = netip.AddrFrom16([16]byte(sa[8:24]))
	}
	return q, nil
}
