// Package netstack terminates the traffic read from a TUN device in a gVisor
// TCP/IP stack, judges every new flow against the policy before answering it,
// and relays allowed flows through ordinary host sockets.
//
// It is the only package of tunwall that imports gVisor. Callers hand it a
// Device (anything with batched Read and Write, such as tun.Device), a
// compiled policy, an upstream dialer and an Events sink, and get back std
// types: net.Conn, netip.AddrPort, error.
//
// Per flow:
//
//	TCP  verdict on the SYN, before any SYN-ACK. allow: dial upstream first,
//	     RST if that fails, else complete the handshake and relay both ways
//	     with half-close. deny: silence. reject: RST.
//	UDP  verdict on the first datagram of a 5-tuple; a session relays
//	     datagrams until udp_idle passes. reject: ICMP port unreachable.
//	ICMP echo requests never reach gVisor (which would answer for any
//	     address): allowed ones are sent upstream from a ping socket and
//	     only real replies are written back. reject: ICMP administratively
//	     prohibited.
package netstack
