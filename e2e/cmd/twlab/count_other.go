//go:build !linux

package main

import (
	"fmt"
	"runtime"
	"time"
)

// count needs Linux packet sockets.
func count(iface string, quiet, d time.Duration) error {
	return fmt.Errorf("count: not supported on %s", runtime.GOOS)
}
