//go:build linux

package owner

import (
	"bufio"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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
	// Ping sockets (/proc/net/icmp) have the echo identifier as local port.
	if uid, _, ok := lookup(ICMP, "127.0.0.1:8080", "10.0.0.1:0"); !ok || uid != 1000 {
		t.Errorf("ping socket: uid %d found %v, want 1000", uid, ok)
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
	if pid := NewFinder().pid(inode, uid, func() bool { return false }); pid != os.Getpid() {
		t.Errorf("pid of the socket = %d, want %d", pid, os.Getpid())
	}
}

// A UDP socket that sends with sendto and was never connected is found by
// its local address, whatever peer it talks to; sock_diag and the /proc
// fallback agree on it.
func TestLookupUnconnectedUDP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	local := netip.MustParseAddrPort(pc.LocalAddr().String())
	peer := netip.MustParseAddrPort("127.0.0.1:53")
	f := NewFinder()
	o, err := f.Lookup(UDP, local, peer)
	if err != nil || o.PID != os.Getpid() {
		t.Fatalf("Lookup(unconnected UDP) = %+v, %v; want this process", o, err)
	}
	uid, inode, err := f.diag.lookup(UDP, local, peer)
	puid, pinode, perr := procNetLookup("/proc", UDP, local, peer)
	if err != nil || perr != nil || uid != puid || inode != pinode {
		t.Errorf("sock_diag says uid %d inode %d (%v), /proc/net says uid %d inode %d (%v)", uid, inode, err, puid, pinode, perr)
	}
	if _, err := f.Lookup(TCP, local, peer); !errors.Is(err, ErrNotFound) {
		t.Errorf("a UDP socket was found as TCP: %v", err)
	}
}

// One sock_diag socket serves many lookups in a row, and the two ends of
// a connection are told apart.
func TestDiagExactRequest(t *testing.T) {
	local, remote, closeFn := pair(t, "tcp", "127.0.0.1:0")
	defer closeFn()
	d := newDiag()
	defer d.reset()
	for i := 0; i < 1000; i++ {
		if _, inode, err := d.lookup(TCP, local, remote); err != nil || inode == 0 {
			t.Fatalf("lookup %d: inode %d, %v", i, inode, err)
		}
	}
	// The reversed pair is the server's socket, a different one.
	_, a, _ := d.lookup(TCP, local, remote)
	_, b, err := d.lookup(TCP, remote, local)
	if err != nil || a == b {
		t.Errorf("both ends of a connection gave inode %d and %d (%v)", a, b, err)
	}
}

// The local address set follows addresses as they come and go.
func TestLocalsFollowChanges(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to create a network namespace")
	}
	runInNewNetns(t, func() {
		l, err := WatchLocals()
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		a := netip.MustParseAddr("10.77.0.1")
		if l.Contains(a) {
			t.Fatal("an address not yet assigned is local")
		}
		link, err := netlink.LinkByName("lo")
		if err != nil {
			t.Fatal(err)
		}
		nlAddr, _ := netlink.ParseAddr("10.77.0.1/32")
		if err := netlink.AddrAdd(link, nlAddr); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return l.Contains(a) }, "address added")
		if !l.Contains(netip.MustParseAddr("::ffff:10.77.0.1")) {
			t.Error("the IPv4-mapped form of a local address is not local")
		}
		if err := netlink.AddrDel(link, nlAddr); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return !l.Contains(a) }, "address removed")
	})
}

// runInNewNetns runs fn on a thread moved into a fresh network namespace,
// which is deleted afterwards.
func runInNewNetns(t *testing.T, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(err) // this thread must not run anything else in ns
		}
		ns.Close()
	}()
	fn()
}

// waitFor polls cond until it holds or five seconds have passed.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkLookup measures a lookup of a socket the Finder has not seen
// (sock_diag, then a /proc scan of the owner's processes), as for each new
// flow, and of the sock_diag query alone.
func BenchmarkLookup(b *testing.B) {
	srv, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	f := NewFinder()
	b.Run("new-socket", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			c, err := net.Dial("udp", srv.LocalAddr().String())
			if err != nil {
				b.Fatal(err)
			}
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			b.StartTimer()
			if o, err := f.Lookup(UDP, local, netip.MustParseAddrPort(srv.LocalAddr().String())); err != nil || o.PID == 0 {
				b.Fatalf("lookup: %+v %v", o, err)
			}
			b.StopTimer()
			c.Close()
			b.StartTimer()
		}
	})
	b.Run("sock_diag", func(b *testing.B) {
		c, err := net.Dial("udp", srv.LocalAddr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		local := netip.MustParseAddrPort(c.LocalAddr().String())
		remote := netip.MustParseAddrPort(srv.LocalAddr().String())
		for b.Loop() {
			if _, _, err := f.diag.lookup(UDP, local, remote); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPidScansOnlyForLiveSockets: the scan of /proc for a socket's process
// is made only while the socket exists; for one already gone it would
// find nothing and hold up the lookups behind it.
func TestPidScansOnlyForLiveSockets(t *testing.T) {
	root := t.TempDir()
	fd := filepath.Join(root, "4242", "fd")
	if err := os.MkdirAll(fd, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("socket:[12345]", filepath.Join(fd, "3")); err != nil {
		t.Fatal(err)
	}
	f := NewFinder()
	f.procRoot = root
	if pid := f.pid(12345, 0, func() bool { return true }); pid != 0 {
		t.Errorf("socket gone: pid %d, want 0 without a scan", pid)
	}
	if pid := f.pid(12345, 0, func() bool { return false }); pid != 4242 {
		t.Errorf("socket open: pid %d, want 4242 from the scan", pid)
	}
}
