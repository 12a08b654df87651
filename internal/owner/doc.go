// Package owner finds which user and process own a socket on this
// machine, given the flow's addresses: the app identity tunwall attaches
// to flows that start here (route-all, split and per-app routing), for
// the log and for users:/apps: rules.
//
// A lookup asks the kernel's sock_diag interface for the socket's uid and
// inode (falling back to /proc/net/{tcp,udp}{,6}), then finds the process
// holding that inode under /proc/*/fd (a scan, cached and refreshed on a
// miss). Linux only; elsewhere every lookup reports ErrNotFound.
package owner
