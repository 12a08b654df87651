//go:build linux

package owner

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// A socket of this test process is found with this process's uid, pid and
// executable, for TCP and UDP, IPv4 and IPv6.
func TestLookupOwnSockets(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f := NewFinder()
	for _, tc := range []struct {
		proto      Proto
		network    string
		listenAddr string
	}{
		{TCP, "tcp", "127.0.0.1:0"}, {TCP, "tcp", "[::1]:0"},
		{UDP, "udp", "127.0.0.1:0"}, {UDP, "udp", "[::1]:0"},
	} {
		local, remote, closeFn := pair(t, tc.network, tc.listenAddr)
		o, err := f.Lookup(tc.proto, local, remote)
		closeFn()
		if err != nil {
			if tc.listenAddr[0] == '[' && strings.Contains(err.Error(), "not found") {
				t.Logf("%s %s: %v (no IPv6 here?)", tc.network, tc.listenAddr, err)
				continue
			}
			t.Fatalf("%s %v -> %v: %v", tc.network, local, remote, err)
		}
		if o.UID != uint32(os.Getuid()) || o.PID != os.Getpid() || o.Exe != exe {
			t.Errorf("%s %v: owner %+v, want uid %d pid %d exe %s", tc.network, local, o, os.Getuid(), os.Getpid(), exe)
		}
	}
}

// pair opens a connection to a listener of the same kind and returns the
// dialing socket's local and remote addresses.
func pair(t *testing.T, network, listen string) (local, remote netip.AddrPort, closeFn func()) {
	t.Helper()
	var srv interface{ Close() error }
	var target string
	if network == "tcp" {
		ln, err := net.Listen(network, listen)
		if err != nil {
			t.Skipf("listen %s: %v", listen, err)
		}
		srv, target = ln, ln.Addr().String()
	} else {
		pc, err := net.ListenPacket(network, listen)
		if err != nil {
			t.Skipf("listen %s: %v", listen, err)
		}
		srv, target = pc, pc.LocalAddr().String()
	}
	c, err := net.Dial(network, target)
	if err != nil {
		t.Fatal(err)
	}
	local = netip.MustParseAddrPort(c.LocalAddr().String())
	remote = netip.MustParseAddrPort(c.RemoteAddr().String())
	return local, remote, func() { c.Close(); srv.Close() }
}

func TestLookupNoSuchSocket(t *testing.T) {
	_, err := NewFinder().Lookup(TCP, netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2"))
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of no socket: %v, want ErrNotFound", err)
	}
}

// The /proc/net fallback reads the kernel's table format, including the
// byte order of addresses and unconnected UDP sockets.
func TestProcNetFallback(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0
   1: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1001        0 222 1 0
`
	lookup := func(p Proto, local, remote string) (uint32, uint64, bool) {
		return scanProcNet(bufio.NewScanner(strings.NewReader(table)), p,
			netip.MustParseAddrPort(local), netip.MustParseAddrPort(remote))
	}
	if uid, inode, ok := lookup(TCP, "127.0.0.1:50000", "127.0.0.1:8080"); !ok || uid != 1001 || inode != 222 {
		t.Errorf("connected socket: uid %d inode %d found %v, want 1001 222", uid, inode, ok)
	}
	if _, _, ok := lookup(TCP, "127.0.0.1:50000", "127.0.0.1:9"); ok {
		t.Error("a TCP socket matched another peer")
	}
	if uid, inode, ok := lookup(UDP, "127.0.0.1:8080", "10.0.0.1:53"); !ok || uid != 1000 || inode != 111 {
		t.Errorf("unconnected UDP socket: uid %d inode %d found %v, want 1000 111", uid, inode, ok)
	}
	v6, err := parseProcAddr("000080FE00000000FF57A6705DC771FE:0035")
	if err != nil || v6 != netip.MustParseAddrPort("[fe80::70a6:57ff:fe71:c75d]:53") {
		t.Errorf("IPv6 address: %v %v", v6, err)
	}
	if _, err := parseProcAddr("zz:1"); err == nil {
		t.Error("a bad address parsed")
	}
}

// The fallback finds this process's own socket in the real /proc/net.
func TestProcNetLive(t *testing.T) {
	local, remote, closeFn := pair(t, "tcp", "127.0.0.1:0")
	defer closeFn()
	uid, inode, err := procNetLookup("/proc", TCP, local, remote)
	if err != nil || uid != uint32(os.Getuid()) || inode == 0 {
		t.Fatalf("procNetLookup = uid %d inode %d %v", uid, inode, err)
	}
	if pid := NewFinder().pid(inode); pid != os.Getpid() {
		t.Errorf("pid of the socket = %d, want %d", pid, os.Getpid())
	}
}
