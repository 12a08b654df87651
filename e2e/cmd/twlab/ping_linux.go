package main

import (
	"errors"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// echoICMP sends one echo request to addr from an unprivileged ping
// socket (net.ipv4.ping_group_range must admit the caller) and waits for
// the reply.
func echoICMP(addr string, timeout time.Duration) error {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	family, proto, request, reply := unix.AF_INET, unix.IPPROTO_ICMP, byte(8), byte(0)
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: a.As4()}
	if a.Is6() {
		family, proto, request, reply = unix.AF_INET6, unix.IPPROTO_ICMPV6, 128, 129
		sa = &unix.SockaddrInet6{Addr: a.As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(timeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	if err := unix.Connect(fd, sa); err != nil {
		return err
	}
	// Type, code, checksum and identifier are filled in by the kernel
	// where they matter; sequence 1 and a one-byte payload.
	if _, err := unix.Write(fd, []byte{request, 0, 0, 0, 0, 0, 0, 1, 'p'}); err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			return errTimeout
		}
		if err != nil {
			return err
		}
		if n > 0 && buf[0] == reply {
			return nil
		}
	}
}
