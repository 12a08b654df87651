//go:build !linux

package tun

import "context"

// Watch follows nothing on this platform: it waits for ctx.
func (d *Device) Watch(ctx context.Context, changed func(LinkEvent)) error {
	<-ctx.Done()
	return nil
}

// Reconfigure has nothing to do on this platform.
func (d *Device) Reconfigure() error { return nil }
