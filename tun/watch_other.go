//go:build !linux

package tun

import "context"

// Watcher follows nothing on this platform.
type Watcher struct{}

// Watch returns a Watcher that reports nothing.
func (d *Device) Watch() (*Watcher, error) { return &Watcher{}, nil }

// Run waits for ctx.
func (w *Watcher) Run(ctx context.Context, changed func(LinkEvent)) error {
	<-ctx.Done()
	return nil
}

// Close has nothing to end.
func (w *Watcher) Close() {}

// Reconfigure has nothing to do on this platform.
func (d *Device) Reconfigure() error { return nil }
