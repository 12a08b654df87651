//go:build !linux

package netstack

// physicalMemory is not looked up off Linux.
func physicalMemory() int64 { return 0 }
