//go:build !linux

package tun

import (
	"fmt"
	"runtime"

	"github.com/tunwall/tunwall/policy"
)

// Routing is tunwall's routing setup; only Linux has one so far.
type Routing struct{}

// Install succeeds only for configurations that route nothing.
func Install(cfg policy.RoutingConfig, tunName string, mark uint32) (*Routing, error) {
	if cfg.Routes() {
		return nil, fmt.Errorf("routing: mode %s and routing.from are not supported on %s yet", cfg.Mode, runtime.GOOS)
	}
	return &Routing{}, nil
}

// Attach does nothing here.
func (*Routing) Attach(*Device) error { return nil }

// Remove does nothing here.
func (*Routing) Remove(bool) error { return nil }

// Kept is always false here.
func (*Routing) Kept() bool { return false }

// Installed is always empty here.
func (*Routing) Installed() []string { return nil }

// Down has nothing to remove here.
func Down(int) ([]string, error) { return nil, nil }
