//go:build linux

// Command refgw is the benchmark's reference point: a TUN gateway built the
// way tun2socks-style gVisor gateways are built, which is what tunwall's
// first performance floors were set against. make bench measures it in the
// same lab and the same run as the kernel path and tunwall.
//
// It uses gVisor's own parts with their defaults: the TUN opened by gVisor's
// tun package, the fdbased link endpoint, a stack with SACK on, Nagle off,
// Reno and RACK, and the TCP and UDP forwarders. A TCP flow's handshake is
// completed first, then the destination is dialled, then one goroutine per
// direction copies with a pooled buffer; when one direction ends cleanly the
// other gets five seconds to finish. It judges nothing and logs nothing.
//
// Where tun2socks-style gateways commonly leave an upstream connection open
// for those five seconds after its client reset the flow, and close it with
// a FIN, refgw resets it at once, as tunwall does: the benchmark's workload
// resets thousands of flows a second, and lingering sockets would exhaust
// the server's descriptors and the gateway's ports, which the other paths
// measured in the same lab share. That only makes the reference faster.
//
//	refgw run -tun NAME [-mtu 1500]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/fdbased"
	"gvisor.dev/gvisor/pkg/tcpip/link/tun"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	maxInFlight = 2048             // TCP handshakes in flight
	dialTimeout = 5 * time.Second  // to the destination
	drainTime   = 5 * time.Second  // for one direction after the other ended
	udpIdle     = 60 * time.Second // a UDP session without traffic ends
	bufSize     = 20 << 10         // copy buffer per direction
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != "run" {
		fmt.Fprintln(os.Stderr, "usage: refgw run -tun NAME [-mtu 1500]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet("refgw run", flag.ExitOnError)
	name := fs.String("tun", "", "TUN device to create")
	mtu := fs.Int("mtu", 1500, "MTU of the device")
	fs.Parse(os.Args[2:])
	if *name == "" {
		fmt.Fprintln(os.Stderr, "refgw: -tun is required")
		os.Exit(2)
	}
	if err := run(*name, *mtu); err != nil {
		fmt.Fprintln(os.Stderr, "refgw:", err)
		os.Exit(1)
	}
}

func run(name string, mtu int) error {
	fd, err := tun.Open(name)
	if err != nil {
		return fmt.Errorf("open tun %s: %w", name, err)
	}
	defer unix.Close(fd)
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetMTU(link, mtu); err != nil {
		return err
	}
	ep, err := fdbased.New(&fdbased.Options{FDs: []int{fd}, MTU: uint32(mtu)})
	if err != nil {
		return err
	}
	s, err := newStack(ep)
	if err != nil {
		return err
	}
	defer s.Close()
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

func newStack(ep stack.LinkEndpoint) (*stack.Stack, error) {
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
	})
	sack := tcpip.TCPSACKEnabled(true)
	delay := tcpip.TCPDelayEnabled(false)
	cc := tcpip.CongestionControlOption("reno")
	recovery := tcpip.TCPRACKLossDetection
	for _, opt := range []tcpip.SettableTransportProtocolOption{&sack, &delay, &cc, &recovery} {
		if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, opt); err != nil {
			return nil, fmt.Errorf("tcp option %T: %s", opt, err)
		}
	}
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s, 0, maxInFlight, handleTCP).HandlePacket)
	s.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s, handleUDP).HandlePacket)
	const nic = 1
	if err := s.CreateNIC(nic, ep); err != nil {
		return nil, fmt.Errorf("create nic: %s", err)
	}
	if err := s.SetPromiscuousMode(nic, true); err != nil {
		return nil, fmt.Errorf("promiscuous: %s", err)
	}
	if err := s.SetSpoofing(nic, true); err != nil {
		return nil, fmt.Errorf("spoofing: %s", err)
	}
	s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nic},
		{Destination: header.IPv6EmptySubnet, NIC: nic},
	})
	return s, nil
}

// handleTCP runs on its own goroutine for every new flow.
func handleTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		return
	}
	r.Complete(false)
	ep.SocketOptions().SetKeepAlive(true)
	local := gonet.NewTCPConn(&wq, ep)
	defer local.Close()
	remote, err := dial("tcp", id)
	if err != nil {
		return
	}
	defer remote.Close()
	relay(local, remote.(*net.TCPConn))
}

// handleUDP starts a session for the first datagram of a new 5-tuple.
func handleUDP(r *udp.ForwarderRequest) bool {
	id := r.ID()
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return true
	}
	local := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer local.Close()
		remote, err := dial("udp", id)
		if err != nil {
			return
		}
		defer remote.Close()
		relayUDP(local, remote)
	}()
	return true
}

// dial connects to the destination the client addressed.
func dial(network string, id stack.TransportEndpointID) (net.Conn, error) {
	dst := net.JoinHostPort(id.LocalAddress.String(), strconv.Itoa(int(id.LocalPort)))
	return net.DialTimeout(network, dst, dialTimeout)
}

var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// relay copies both ways between the client's connection a and the
// upstream one b until both directions end. After a clean end of one
// direction the other may go on for drainTime; a failed direction (a
// reset, say) ends the flow at once and resets b, so that a flow's
// upstream connection neither outlives its client nor leaves the gateway
// a TIME-WAIT socket per flow.
func relay(a net.Conn, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := bufs.Get().(*[]byte)
		_, err := io.CopyBuffer(dst, src, *buf)
		bufs.Put(buf)
		if err != nil {
			b.SetLinger(0)
			a.Close()
			b.Close()
			return
		}
		dst.SetReadDeadline(time.Now().Add(drainTime))
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
}

// relayUDP copies datagrams both ways until the session is idle for udpIdle.
func relayUDP(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := bufs.Get().(*[]byte)
		defer bufs.Put(buf)
		for {
			src.SetReadDeadline(time.Now().Add(udpIdle))
			n, err := src.Read(*buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					dst.SetReadDeadline(time.Now()) // end the other direction too
				}
				return
			}
			if _, err := dst.Write((*buf)[:n]); err != nil {
				return
			}
		}
	}
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
}
