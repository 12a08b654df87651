package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Watcher follows the device's link from the moment Watch returns; Run
// reports what happens to it.
type Watcher struct {
	name    string
	index   int
	updates chan netlink.LinkUpdate
	done    chan struct{}
	close   sync.Once

	mu      sync.Mutex
	recvErr error // from the subscription

	// The link as it was once subscribed to.
	up, gone bool
}

// Watch subscribes to changes of the device's link. Run reports them
// from then on, so a change made after Watch returns is never missed,
// however late Run starts. The subscription ends with Run, or with Close
// if Run never comes.
func (d *Device) Watch() (*Watcher, error) {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", d.name, err)
	}
	return watchLink(d.name, link.Attrs().Index)
}

func watchLink(name string, index int) (*Watcher, error) {
	w := &Watcher{name: name, index: index, updates: make(chan netlink.LinkUpdate, 16), done: make(chan struct{}), up: true}
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		w.mu.Lock()
		w.recvErr = errors.Join(w.recvErr, err)
		w.mu.Unlock()
	}}
	if err := netlink.LinkSubscribeWithOptions(w.updates, w.done, opts); err != nil {
		return nil, fmt.Errorf("watch %s: %w", name, err)
	}
	// A change between finding the link and subscribing would be missed:
	// look once more now that changes are followed.
	link, err := netlink.LinkByIndex(index)
	switch {
	case err != nil:
		w.gone = true
	case link.Attrs().Flags&net.FlagUp == 0:
		w.up = false
	}
	return w, nil
}

// Run reports what happens to the link until ctx ends: LinkDown when it
// is set down (the kernel then drops every route through it, and its
// IPv6 addresses), or first of all if it was down already when Watch
// subscribed; LinkUp when it is set up again; LinkDeleted when it is
// deleted, after which Run returns ErrDeleted. It returns another error
// if it cannot follow the link.
func (w *Watcher) Run(ctx context.Context, changed func(LinkEvent)) error {
	defer w.Close()
	if w.gone {
		changed(LinkDeleted)
		return ErrDeleted
	}
	up := true
	if !w.up {
		up = false
		changed(LinkDown)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-w.updates:
			if !ok {
				w.mu.Lock()
				defer w.mu.Unlock()
				if w.recvErr == nil {
					w.recvErr = errors.New("the subscription ended")
				}
				return fmt.Errorf("watch %s: %w", w.name, w.recvErr)
			}
			if int(u.Index) != w.index {
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

// Close ends the subscription. Run does so when it returns.
func (w *Watcher) Close() {
	w.close.Do(func() {
		close(w.done)
		for range w.updates { // the subscription ends once it is read out
		}
	})
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
