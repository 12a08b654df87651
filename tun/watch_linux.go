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
	name  string
	index int

	mu      sync.Mutex // guards the subscription, which Run may renew
	sub     *linkSubscription
	initial linkState // the link as it was once first subscribed to
}

// linkSubscription is one subscription to the namespace's link changes.
type linkSubscription struct {
	updates chan netlink.LinkUpdate
	done    chan struct{}
	ended   bool

	mu  sync.Mutex
	err error // why it ended, if it did by itself
}

type linkState int

const (
	linkUp linkState = iota
	linkDown
	linkGone
)

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
	w := &Watcher{name: name, index: index}
	sub, state, err := w.subscribe()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", name, err)
	}
	w.sub, w.initial = sub, state
	return w, nil
}

// subscribe starts a subscription and then looks at the link, so that no
// change after the look is missed.
func (w *Watcher) subscribe() (*linkSubscription, linkState, error) {
	sub := &linkSubscription{updates: make(chan netlink.LinkUpdate, 16), done: make(chan struct{})}
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		sub.mu.Lock()
		sub.err = errors.Join(sub.err, err)
		sub.mu.Unlock()
	}}
	if err := netlink.LinkSubscribeWithOptions(sub.updates, sub.done, opts); err != nil {
		return nil, 0, err
	}
	link, err := netlink.LinkByIndex(w.index)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		return sub, linkGone, nil
	case err != nil:
		sub.end()
		return nil, 0, err
	case link.Attrs().Flags&net.FlagUp == 0:
		return sub, linkDown, nil
	}
	return sub, linkUp, nil
}

// end ends the subscription and waits until it has.
func (s *linkSubscription) end() {
	if !s.ended {
		s.ended = true
		close(s.done)
		for range s.updates { // the subscription ends once it is read out
		}
	}
}

// Run reports what happens to the link until ctx ends: LinkDown when it
// is set down (the kernel then drops every route through it, and its
// IPv6 addresses), or first of all if it was down already when Watch
// subscribed; LinkUp when it is set up again; LinkDeleted when it is
// deleted, after which Run returns ErrDeleted.
//
// Notifications can be lost (on a host with heavy interface churn, the
// kernel drops what the subscription has no room for, and ends it). Run
// then subscribes again and looks at the link: LinkResumed if it is up,
// since it may have gone down and up in between. It returns an error
// only if it cannot subscribe again.
func (w *Watcher) Run(ctx context.Context, changed func(LinkEvent)) error {
	defer w.Close()
	up := true
	// follow reports the link's state if it changed; an up link looked at
	// after a renewal is LinkResumed even if it was up. It reports false
	// once the link is gone.
	follow := func(state linkState, renewed bool) bool {
		switch {
		case state == linkGone:
			changed(LinkDeleted)
			return false
		case state == linkDown && up:
			up = false
			changed(LinkDown)
		case state == linkUp && !up:
			up = true
			changed(LinkUp)
		case state == linkUp && renewed:
			changed(LinkResumed)
		}
		return true
	}
	if !follow(w.initial, false) {
		return ErrDeleted
	}
	for {
		w.mu.Lock()
		updates := w.sub.updates
		w.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case u, ok := <-updates:
			state, renewed := linkUp, !ok
			switch {
			case renewed:
				var err error
				if state, err = w.renew(); err != nil {
					return fmt.Errorf("watch %s: %w", w.name, err)
				}
			case int(u.Index) != w.index:
				continue
			case u.Header.Type == unix.RTM_DELLINK:
				state = linkGone
			case u.Flags&unix.IFF_UP == 0:
				state = linkDown
			}
			if !follow(state, renewed) {
				return ErrDeleted
			}
		}
	}
}

// renew replaces a subscription that ended by itself with a new one, and
// returns the link's state once it is in place.
func (w *Watcher) renew() (linkState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.sub
	old.end()
	old.mu.Lock()
	lost := old.err
	old.mu.Unlock()
	sub, state, err := w.subscribe()
	if err != nil {
		if lost == nil {
			lost = errors.New("the subscription ended")
		}
		return 0, errors.Join(lost, err)
	}
	w.sub = sub
	return state, nil
}

// Close ends the subscription. Run does so when it returns.
func (w *Watcher) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sub.end()
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
