package netstack

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// queuedError builds what recvmsg(MSG_ERRQUEUE) gives for an ICMP error:
// the control message (extended error, then the sender's address).
func queuedError(t *testing.T, origin, typ, code uint8, info uint32, from netip.Addr) []byte {
	t.Helper()
	ee := unix.SockExtendedErr{Errno: uint32(unix.EHOSTUNREACH), Origin: origin, Type: typ, Code: code, Info: info}
	if unsafe.Sizeof(ee) != sizeofSockExtendedErr {
		t.Fatalf("struct sock_extended_err is %d bytes, not %d", unsafe.Sizeof(ee), sizeofSockExtendedErr)
	}
	data := unsafe.Slice((*byte)(unsafe.Pointer(&ee)), sizeofSockExtendedErr)
	level, opt := int32(unix.IPPROTO_IP), int32(unix.IP_RECVERR)
	var sa []byte
	if from.Is4() {
		sa = make([]byte, unix.SizeofSockaddrInet4)
		binary.NativeEndian.PutUint16(sa, unix.AF_INET)
		a := from.As4()
		copy(sa[4:], a[:])
	} else {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_RECVERR
		sa = make([]byte, unix.SizeofSockaddrInet6)
		binary.NativeEndian.PutUint16(sa, unix.AF_INET6)
		a := from.As16()
		copy(sa[8:], a[:])
	}
	data = append(append([]byte(nil), data...), sa...)
	b := make([]byte, unix.CmsgSpace(len(data)))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = level, opt
	h.SetLen(unix.CmsgLen(len(data)))
	copy(b[unix.CmsgLen(0):], data)
	return b
}

// parseQueuedError reads an entry of an ICMP socket's error queue the way
// readQueuedError and checkQueued do: the extended error in oob, the
// request it is about in data.
func parseQueuedError(data, oob []byte) *ICMPError {
	e := parseExtendedError(oob)
	if e == nil {
		return nil
	}
	return echoErrorOf(e, data)
}

func TestParseQueuedError(t *testing.T) {
	echo := []byte{icmp4Echo, 0, 0, 0, 0x12, 0x34, 0, 9, 'h', 'i'} // ping socket: the request from its ICMP header
	echo6 := append([]byte{icmp6Echo}, echo[1:]...)
	rawV4 := append(ipHeader(netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("192.0.2.1"), protoICMPv4, len(echo)), echo...)
	router4, router6 := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8:ff::1")
	for _, tc := range []struct {
		name string
		data []byte
		oob  []byte
		want *ICMPError
	}{
		{"ping socket v4", echo, queuedError(t, unix.SO_EE_ORIGIN_ICMP, icmp4Unreachable, icmp4CodeHostUnreachable, 0, router4),
			&ICMPError{From: router4, Type: icmp4Unreachable, Code: icmp4CodeHostUnreachable, Seq: 9, Payload: []byte("hi")}},
		{"raw socket v4", rawV4, queuedError(t, unix.SO_EE_ORIGIN_ICMP, icmp4Unreachable, icmp4CodeFragNeeded, 1400, router4),
			&ICMPError{From: router4, Type: icmp4Unreachable, Code: icmp4CodeFragNeeded, Info: 1400, Seq: 9, Payload: []byte("hi")}},
		{"ping socket v6", echo6, queuedError(t, unix.SO_EE_ORIGIN_ICMP6, icmp6PacketTooBig, 0, 1280, router6),
			&ICMPError{From: router6, Type: icmp6PacketTooBig, Info: 1280, Seq: 9, Payload: []byte("hi")}},
		{"local error", echo, queuedError(t, unix.SO_EE_ORIGIN_LOCAL, 0, 0, 1500, router4), nil},
		{"nothing quoted", nil, queuedError(t, unix.SO_EE_ORIGIN_ICMP, icmp4Unreachable, 1, 0, router4), nil},
		{"short quote", echo[:6], queuedError(t, unix.SO_EE_ORIGIN_ICMP, icmp4Unreachable, 1, 0, router4), nil},
		{"no extended error", echo, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseQueuedError(tc.data, tc.oob)
			if (got == nil) != (tc.want == nil) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			if got == nil {
				return
			}
			if got.From != tc.want.From || got.Type != tc.want.Type || got.Code != tc.want.Code ||
				got.Info != tc.want.Info || got.Seq != tc.want.Seq || string(got.Payload) != string(tc.want.Payload) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
