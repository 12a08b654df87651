package owner

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
)

// Locals is the set of addresses assigned to this network namespace's
// interfaces, kept current from netlink address notifications. A flow
// whose source is one of them started on this machine and has an owner to
// look up; any other source is another host's. Safe for concurrent use.
type Locals struct {
	nl   *netlink.Handle // opened in the namespace WatchLocals ran in
	set  atomic.Pointer[map[netip.Addr]struct{}]
	done chan struct{}
	wg   sync.WaitGroup
}

// WatchLocals reads the current addresses and follows their changes until
// Close.
func WatchLocals() (*Locals, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("owner: netlink: %w", err)
	}
	l := &Locals{nl: h, done: make(chan struct{})}
	updates, err := l.subscribe()
	if err != nil {
		h.Close()
		return nil, err
	}
	if err := l.reload(); err != nil {
		close(l.done)
		drain(updates)
		h.Close()
		return nil, err
	}
	l.wg.Add(1)
	go l.follow(updates)
	return l, nil
}

func (l *Locals) subscribe() (chan netlink.AddrUpdate, error) {
	updates := make(chan netlink.AddrUpdate, 64)
	// Errors are not reported: a failed receive ends the subscription,
	// which follow notices by the channel closing.
	err := netlink.AddrSubscribeWithOptions(updates, l.done, netlink.AddrSubscribeOptions{ErrorCallback: func(error) {}})
	if err != nil {
		return nil, fmt.Errorf("owner: watch addresses: %w", err)
	}
	return updates, nil
}

// follow reloads the set on every change. When the subscription ends
// (notifications were lost, say) it subscribes again and reloads, since
// changes may have been missed.
func (l *Locals) follow(updates chan netlink.AddrUpdate) {
	defer l.wg.Done()
	for {
		select {
		case <-l.done:
			drain(updates)
			return
		case _, ok := <-updates:
			for ok && len(updates) > 0 { // a burst of changes: one reload
				_, ok = <-updates
			}
			if !ok {
				next, err := l.subscribe()
				if err != nil {
					return // keep the last set; nothing more to follow
				}
				updates = next
			}
			l.reload() // on failure the old set stays; the next change retries
		}
	}
}

// drain waits for a subscription's goroutine to finish (it closes the
// channel once done is closed), so it is not left blocked on a send.
func drain(updates chan netlink.AddrUpdate) {
	for range updates {
	}
}

// Refresh reads the addresses again now, without waiting for the
// notification of a change this process just made (a new device's
// address, say).
func (l *Locals) Refresh() error { return l.reload() }

// reload replaces the set with the addresses the kernel has now.
func (l *Locals) reload() error {
	addrs, err := l.nl.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("owner: list addresses: %w", err)
	}
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			set[ip.Unmap()] = struct{}{}
		}
	}
	l.set.Store(&set)
	return nil
}

// Contains reports whether a is assigned to an interface here.
func (l *Locals) Contains(a netip.Addr) bool {
	if l == nil {
		return false
	}
	_, ok := (*l.set.Load())[a.Unmap()]
	return ok
}

// Close stops following changes.
func (l *Locals) Close() {
	close(l.done)
	l.wg.Wait()
	l.nl.Close()
}
