//go:build !linux

package tun

import (
	"fmt"
	"runtime"

	"github.com/tunwall/tunwall/policy"
)

// Open is not implemented on this platform yet: the device itself exists in
// wireguard's tun package, but addressing it is platform work still to do.
func Open(cfg policy.TunConfig) (*Device, error) {
	return nil, fmt.Errorf("open tun %s: not supported on %s yet", cfg.Name, runtime.GOOS)
}
