package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/tunwall/tunwall/e2e/lab"
)

// Lab service ports (TCP, and UDP for echo).
const (
	portEcho = "7001" // TCP and UDP: send back what arrives; TCP half-closes after EOF
	portHash = "7002" // TCP: read to EOF, answer "<bytes> <sha256>\n"
	portGen  = "7003" // TCP: read "<n> <seed>\n", send n bytes of Stream(seed)
	// TCP: read "hold\n" and then nothing more, or "reset\n" and send until
	// the peer stops reading, then reset, or "probe\n", answer "probing\n"
	// and hold the connection with keepalive probes every second.
	portStall = "7004"
)

// serve runs the lab services until the process is killed. extra names
// more ports: "tcp:80" answers like a tiny web server, "udp:53" echoes
// (and answers DNS queries).
func serve(extra ...string) error {
	handlers := map[string]func(net.Conn){portEcho: echoTCP, portHash: hashTCP, portGen: genTCP, portStall: stallTCP}
	udpPorts := []string{portEcho}
	for _, e := range extra {
		proto, port, _ := strings.Cut(e, ":")
		switch proto {
		case "tcp":
			handlers[port] = helloTCP
		case "udp":
			udpPorts = append(udpPorts, port)
		default:
			return fmt.Errorf("serve: %q: want tcp:PORT or udp:PORT", e)
		}
	}
	for port, h := range handlers {
		ln, err := net.Listen("tcp", ":"+port)
		if err != nil {
			return err
		}
		go acceptLoop(ln, h)
	}
	// One UDP socket per local address, so replies leave from the address
	// the request was sent to (an unbound socket would let the kernel pick
	// any of the host's addresses as the source).
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, a := range addrs {
		ip := a.(*net.IPNet).IP
		if ip.IsLinkLocalUnicast() {
			continue
		}
		for _, port := range udpPorts {
			pc, err := net.ListenPacket("udp", net.JoinHostPort(ip.String(), port))
			if err != nil {
				return err
			}
			go echoUDP(pc)
		}
	}
	fmt.Println("ready")
	select {}
}

// acceptLoop serves each connection on its own goroutine until ln is
// closed. Running out of descriptors pauses it instead of ending it: a
// gateway that keeps upstream connections open after their clients left
// must not take the service down for the measurements that follow.
func acceptLoop(ln net.Listener, h func(net.Conn)) {
	pause := time.Millisecond
	for {
		c, err := ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(pause) // EMFILE and the like: wait for a close
			pause = min(2*pause, time.Second)
			continue
		}
		pause = time.Millisecond
		go func() {
			defer c.Close()
			h(c)
		}()
	}
}

func echoTCP(c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

func hashTCP(c net.Conn) {
	h := sha256.New()
	n, _ := io.Copy(h, c)
	fmt.Fprintf(c, "%d %s\n", n, hex.EncodeToString(h.Sum(nil)))
}

func genTCP(c net.Conn) {
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	f := strings.Fields(line)
	if len(f) != 2 {
		return
	}
	n, _ := strconv.ParseInt(f[0], 10, 64)
	seed, _ := strconv.ParseUint(f[1], 10, 64)
	io.CopyN(c, lab.NewStream(seed), n)
}

// stallTCP serves a peer that stalls, or stalls its peer. "hold": it
// reads nothing more and keeps the connection for a minute. "reset": it
// sends until a write has not gone out for 200 ms (the peer does not
// read), then resets the connection.
func stallTCP(c net.Conn) {
	line, err := bufio.NewReaderSize(c, 16).ReadString('\n')
	switch {
	case err != nil:
	case line == "hold\n":
		time.Sleep(time.Minute)
	case line == "reset\n":
		buf := make([]byte, 64<<10)
		for {
			c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
			if _, err := c.Write(buf); err != nil {
				break
			}
		}
		c.(*net.TCPConn).SetLinger(0)
	case line == "probe\n":
		c.(*net.TCPConn).SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 60})
		io.WriteString(c, "probing\n")
		io.Copy(io.Discard, c)
	}
}

// helloTCP answers one request line like a minimal web server.
func helloTCP(c net.Conn) {
	bufio.NewReader(c).ReadString('\n')
	fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the lab server (%s)\n", c.LocalAddr())
}

// isDNSPort reports whether pc listens on port 53, where DNS queries get
// answers (anything else is echoed, as on every UDP port).
func isDNSPort(pc net.PacketConn) bool {
	a, ok := pc.LocalAddr().(*net.UDPAddr)
	return ok && a.Port == 53
}

// echoUDP sends back every datagram; on port 53 it answers DNS queries.
func echoUDP(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if a := dnsAnswer(buf[:n]); a != nil && isDNSPort(pc) {
			pc.WriteTo(a, addr)
			continue
		}
		pc.WriteTo(buf[:n], addr)
	}
}
