package owner

import (
	"errors"
)

// Owner is who holds a socket.
type Owner struct {
	UID  uint32
	User string // "" if the uid has no name
	PID  int    // 0 if no process was found (the socket may be closing)
	Exe  string // the process's executable, "" if unknown
}

// ErrNotFound means no socket on this machine has those addresses: the
// flow came from another host, or the socket is already gone.
var ErrNotFound = errors.New("owner: no local socket with those addresses")

// Proto is the transport of the socket looked up.
type Proto uint8

// Transports with owners.
const (
	TCP Proto = iota + 1
	UDP
	// ICMP is an echo ("ping") socket: its local port is the echo
	// identifier. Raw sockets have no such identity and are not found.
	ICMP
)
