package tun

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watch reports what happens to the device's link until ctx ends: LinkDown
// when it is set down (the kernel then drops every route through it, and
// its IPv6 addresses), LinkUp when it is set up again, LinkDeleted when it
// is deleted, after which Watch returns ErrDeleted. It returns another
// error if it cannot follow the link.
func (d *Device) Watch(ctx context.Context, changed func(LinkEvent)) error {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("watch %s: %w", d.name, err)
	}
	index := link.Attrs().Index
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	var mu sync.Mutex
	var recvErr error
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		mu.Lock()
		recvErr = errors.Join(recvErr, err)
		mu.Unlock()
	}}
	if err := netlink.LinkSubscribeWithOptions(updates, done, opts); err != nil {
		return fmt.Errorf("watch %s: %w", d.name, err)
	}
	defer func() {
		close(done)
		for range updates { // the subscription ends once it is read out
		}
	}()
	// A change between opening the device and subscribing would be missed:
	// look once more now that changes are followed.
	if _, err := netlink.LinkByIndex(index); err != nil {
		changed(LinkDeleted)
		return ErrDeleted
	}
	up := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			if !ok {
				mu.Lock()
				defer mu.Unlock()
				if recvErr == nil {
					recvErr = errors.New("the subscription ended")
				}
				return fmt.Errorf("watch %s: %w", d.name, recvErr)
			}
			if int(u.Index) != index {
				continue
			}
			switch {
			case u.Header.Type == unix.RTM_DELLINK:
				changed(LinkDeleted)
				return ErrDeleted
			case u.Flags&unix.IFF_UP == 0 && up:
				up = false
				changed(LinkDown)
			case u.Flags&unix.IFF_UP != 0 && !up:
				up = true
				changed(LinkUp)
			}
		}
	}
}

// Reconfigure gives the device back the addresses it lost while it was
// down (IPv6 addresses go with the link); those it kept stay as they are.
func (d *Device) Reconfigure() error {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("find tun %s: %w", d.name, err)
	}
	return addAddresses(link, d.name, d.addresses)
}
