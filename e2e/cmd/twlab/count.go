//go:build linux

package main

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// count captures what arrives on iface (an AF_PACKET socket, incoming
// packets only) and counts application traffic: TCP, UDP and ICMP echo,
// not ARP, neighbour discovery or multicast listener reports. It first
// waits up to 10 s for quiet (no such packet for quiet), then counts for
// d. It reports {"quiet": bool, "total": n, "kinds": {...}, "first": "..."}.
func count(iface string, quiet, d time.Duration) error {
	fd, err := packetSocket(iface)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	buf := make([]byte, 65536)
	next := func(until time.Time) (string, bool) {
		for time.Now().Before(until) {
			n, from, err := syscall.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // the 50 ms receive timeout
			}
			if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == syscall.PACKET_OUTGOING {
				continue
			}
			if kind := classify(buf[:n]); kind != "" {
				return kind, true
			}
		}
		return "", false
	}
	isQuiet := quiet == 0
	for deadline := time.Now().Add(10 * time.Second); !isQuiet && time.Now().Before(deadline); {
		_, seen := next(time.Now().Add(quiet))
		isQuiet = !seen
	}
	kinds := map[string]int{}
	total, first := 0, ""
	for end := time.Now().Add(d); ; {
		kind, ok := next(end)
		if !ok {
			break
		}
		if total == 0 {
			first = kind
		}
		total++
		kinds[kind]++
	}
	return emit(map[string]any{"quiet": isQuiet, "total": total, "kinds": kinds, "first": first})
}

func packetSocket(iface string) (int, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return -1, err
	}
	proto := int(htons(syscall.ETH_P_ALL))
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, proto)
	if err != nil {
		return -1, fmt.Errorf("packet socket: %w", err)
	}
	tv := syscall.NsecToTimeval(int64(50 * time.Millisecond))
	if err := syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("bind packet socket to %s: %w", iface, err)
	}
	return fd, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// classify names a frame's application traffic ("tcp 10.0.0.1 > 10.0.0.2:80"),
// or "" for link housekeeping.
func classify(frame []byte) string {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
	var src, dst string
	if ip, ok := p.NetworkLayer().(*layers.IPv4); ok {
		src, dst = ip.SrcIP.String(), ip.DstIP.String()
	} else if ip, ok := p.NetworkLayer().(*layers.IPv6); ok {
		src, dst = ip.SrcIP.String(), ip.DstIP.String()
	} else {
		return ""
	}
	switch t := p.TransportLayer().(type) {
	case *layers.TCP:
		return fmt.Sprintf("tcp %s > %s:%d", src, dst, t.DstPort)
	case *layers.UDP:
		return fmt.Sprintf("udp %s > %s:%d", src, dst, t.DstPort)
	}
	if ic, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok && ic.TypeCode.Type() == layers.ICMPv4TypeEchoRequest {
		return "icmp echo " + src + " > " + dst
	}
	if ic, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok && ic.TypeCode.Type() == layers.ICMPv6TypeEchoRequest {
		return "icmp echo " + src + " > " + dst
	}
	return ""
}
