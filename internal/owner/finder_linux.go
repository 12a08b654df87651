package owner

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Finder looks up socket owners. It is safe for concurrent use.
type Finder struct {
	diag *diag

	mu       sync.Mutex
	pids     map[uint64]int // socket inode -> pid, from the last scan
	recent   []int          // pids that owned the latest sockets found, newest first
	users    map[uint32]string
	noDiag   bool // sock_diag failed once: use /proc/net from then on
	procRoot string
}

// NewFinder returns a Finder reading the running system.
func NewFinder() *Finder {
	return &Finder{diag: newDiag(), pids: map[uint64]int{}, users: map[uint32]string{}, procRoot: "/proc"}
}

// Lookup finds the owner of the local socket whose local address is local
// and whose peer is remote.
func (f *Finder) Lookup(p Proto, local, remote netip.AddrPort) (Owner, error) {
	uid, inode, err := f.socket(p, local, remote)
	if err != nil {
		return Owner{}, err
	}
	o := Owner{UID: uid, User: f.userName(uid)}
	gone := func() bool {
		_, now, err := f.socket(p, local, remote)
		return err != nil || now != inode
	}
	if pid := f.pid(inode, uid, gone); pid != 0 {
		o.PID = pid
		exe, _ := os.Readlink(filepath.Join(f.procRoot, strconv.Itoa(pid), "exe"))
		o.Exe = strings.TrimSuffix(exe, " (deleted)") // replaced since it started
	}
	return o, nil
}

// socket returns the uid and inode of the socket, from sock_diag or, where
// that is unavailable, /proc/net.
func (f *Finder) socket(p Proto, local, remote netip.AddrPort) (uint32, uint64, error) {
	f.mu.Lock()
	noDiag := f.noDiag
	f.mu.Unlock()
	if !noDiag && p != ICMP { // ping sockets have no sock_diag
		uid, inode, err := f.diag.lookup(p, local, remote)
		if err == nil || errors.Is(err, ErrNotFound) {
			return uid, inode, err
		}
		f.mu.Lock()
		f.noDiag = true
		f.mu.Unlock()
	}
	return procNetLookup(f.procRoot, p, local, remote)
}

// pid finds the process holding socket inode: from the cache if that
// process still holds it; else among the processes that owned the latest
// sockets (a program that opened one connection tends to open more), which
// costs a look at a few fd tables; else from a fresh scan of /proc, first
// of the processes running as uid (the socket's creator, almost always its
// holder), then of all; but not when the socket is gone by then (gone
// says), as no process holds it any more. Under a burst of short flows,
// scanning for closed sockets would hold up the lookups of the sockets
// still open. Lookups that miss together share a scan, as they wait on
// the lock.
func (f *Finder) pid(inode uint64, uid uint32, gone func() bool) int {
	if pid := f.known(inode); pid != 0 {
		return pid
	}
	if gone() { // asks sock_diag, which needs f.mu
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid, ok := f.pids[inode]; ok && processHolds(f.procRoot, pid, inode) { // a scan while this one waited
		f.remember(pid)
		return pid
	}
	f.pids = scanSockets(f.procRoot, func(st os.FileInfo) bool { return ownedBy(st, uid) })
	pid, ok := f.pids[inode]
	if !ok {
		f.pids = scanSockets(f.procRoot, nil)
		pid = f.pids[inode]
	}
	if pid != 0 {
		f.remember(pid)
	}
	return pid
}

// known finds the process holding inode without a scan: the one the last
// scan saw with it, or one of the recent owners; 0 if neither holds it.
func (f *Finder) known(inode uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if pid, ok := f.pids[inode]; ok && processHolds(f.procRoot, pid, inode) {
		f.remember(pid)
		return pid
	}
	for _, pid := range f.recent {
		if processHolds(f.procRoot, pid, inode) {
			f.remember(pid)
			return pid
		}
	}
	return 0
}

// maxRecent is how many socket-owning processes are tried before a scan.
const maxRecent = 8

// remember moves pid to the front of the recent list.
func (f *Finder) remember(pid int) {
	if i := slices.Index(f.recent, pid); i >= 0 {
		f.recent = slices.Delete(f.recent, i, i+1)
	}
	f.recent = slices.Insert(f.recent, 0, pid)
	if len(f.recent) > maxRecent {
		f.recent = f.recent[:maxRecent]
	}
}

func ownedBy(fi os.FileInfo, uid uint32) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid
}

// scanSockets maps every socket inode under /proc/*/fd to its process,
// for the processes whose /proc directory keep accepts (nil: all).
func scanSockets(root string, keep func(os.FileInfo) bool) map[uint64]int {
	out := map[uint64]int{}
	procs, _ := os.ReadDir(root)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if keep != nil {
			fi, err := p.Info()
			if err != nil || !keep(fi) {
				continue
			}
		}
		fdDir := filepath.Join(root, p.Name(), "fd")
		fds, _ := os.ReadDir(fdDir)
		for _, fd := range fds {
			if inode, ok := socketInode(filepath.Join(fdDir, fd.Name())); ok {
				if _, seen := out[inode]; !seen {
					out[inode] = pid
				}
			}
		}
	}
	return out
}

func processHolds(root string, pid int, inode uint64) bool {
	fdDir := filepath.Join(root, strconv.Itoa(pid), "fd")
	fds, _ := os.ReadDir(fdDir)
	for _, fd := range fds {
		if n, ok := socketInode(filepath.Join(fdDir, fd.Name())); ok && n == inode {
			return true
		}
	}
	return false
}

func socketInode(link string) (uint64, bool) {
	target, err := os.Readlink(link)
	if err != nil || !strings.HasPrefix(target, "socket:[") {
		return 0, false
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
	return n, err == nil
}

func (f *Finder) userName(uid uint32) string {
	f.mu.Lock()
	name, ok := f.users[uid]
	f.mu.Unlock()
	if ok {
		return name
	}
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		name = u.Username
	}
	f.mu.Lock()
	f.users[uid] = name
	f.mu.Unlock()
	return name
}

// procNetLookup finds the socket in /proc/net/{tcp,udp}{,6}: the fallback
// where sock_diag is not available. A UDP socket that is not connected
// matches on its local address alone.
func procNetLookup(root string, p Proto, local, remote netip.AddrPort) (uint32, uint64, error) {
	name := map[Proto]string{TCP: "tcp", UDP: "udp", ICMP: "icmp"}[p]
	files := []string{name, name + "6"}
	for _, file := range files {
		fh, err := os.Open(filepath.Join(root, "net", file))
		if err != nil {
			continue
		}
		uid, inode, found := scanProcNet(bufio.NewScanner(fh), p, local, remote)
		fh.Close()
		if found {
			return uid, inode, nil
		}
	}
	return 0, 0, ErrNotFound
}

func scanProcNet(sc *bufio.Scanner, p Proto, local, remote netip.AddrPort) (uint32, uint64, bool) {
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		l, err1 := parseProcAddr(f[1])
		r, err2 := parseProcAddr(f[2])
		if err1 != nil || err2 != nil || !sameAddrPort(l, local) {
			continue
		}
		if !sameAddrPort(r, remote) && !(p != TCP && r.Port() == 0) {
			continue
		}
		uid, _ := strconv.ParseUint(f[7], 10, 32)
		inode, _ := strconv.ParseUint(f[9], 10, 64)
		return uint32(uid), inode, true
	}
	return 0, 0, false
}

func sameAddrPort(a, b netip.AddrPort) bool {
	return a.Port() == b.Port() && (a.Addr().Unmap() == b.Addr().Unmap() || a.Addr().IsUnspecified())
}

// parseProcAddr reads "0100007F:1F90": the address as the kernel stores
// it (32-bit words in host byte order, little-endian here) and the port
// in hex.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, portHex, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	raw, err := hex.DecodeString(h)
	if err != nil || len(raw) != 4 && len(raw) != 16 {
		return netip.AddrPort{}, fmt.Errorf("bad address %q", s)
	}
	for i := 0; i < len(raw); i += 4 {
		raw[i], raw[i+1], raw[i+2], raw[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bad port in %q", s)
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}
