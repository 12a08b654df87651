package tun

import (
	"context"
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestWatcherMissesNothing: a link already down when the watch starts is
// reported down first; changes made after the watch starts and before
// Run does are reported by Run, in order; a deletion ends Run, and a link
// already gone is reported deleted at once.
func TestWatcherMissesNothing(t *testing.T) {
	link, _ := testLink(t)
	// Down (as it is made) when the watch starts, then up.
	w, err := watchLink(link.Attrs().Name, link.Attrs().Index)
	must(t, err)
	must(t, netlink.LinkSetUp(link))
	// Down, up, down again and deleted, all before Run.
	must(t, netlink.LinkSetDown(link))
	must(t, netlink.LinkSetUp(link))
	must(t, netlink.LinkSetDown(link))
	must(t, netlink.LinkDel(link))

	var got []LinkEvent
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = w.Run(ctx, func(ev LinkEvent) { got = append(got, ev) })
	want := []LinkEvent{LinkDown, LinkUp, LinkDown, LinkUp, LinkDown, LinkDeleted}
	if !errors.Is(err, ErrDeleted) || !slices.Equal(got, want) {
		t.Errorf("Run reported %v and returned %v; want %v and ErrDeleted", got, err, want)
	}

	// A link gone by the time of the watch is reported deleted at once.
	w, err = watchLink(link.Attrs().Name, link.Attrs().Index)
	must(t, err)
	got = nil
	err = w.Run(ctx, func(ev LinkEvent) { got = append(got, ev) })
	if want := []LinkEvent{LinkDeleted}; !errors.Is(err, ErrDeleted) || !slices.Equal(got, want) {
		t.Errorf("for a link already gone, Run reported %v and returned %v; want %v and ErrDeleted", got, err, want)
	}
}

// TestWatcherRenews: when notifications are lost and the subscription
// ends, Run subscribes again and goes on, reporting LinkResumed for a link
// that is up (it may have been down meanwhile) and what happens next.
func TestWatcherRenews(t *testing.T) {
	link, ns := testLink(t)
	must(t, netlink.LinkSetUp(link))
	w, err := watchLink(link.Attrs().Name, link.Attrs().Index)
	must(t, err)
	events := make(chan LinkEvent, 16)
	ended := make(chan error, 1)
	go func() {
		// Run subscribes again in the namespace it runs in.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			ended <- err
			return
		}
		ended <- w.Run(context.Background(), func(ev LinkEvent) { events <- ev })
	}()
	next := func(want LinkEvent) {
		t.Helper()
		select {
		case ev := <-events:
			if ev != want {
				t.Fatalf("Run reported %v, want %v", ev, want)
			}
		case <-time.After(5 * time.Second):
			select {
			case err := <-ended:
				t.Fatalf("Run returned %v, want %v reported", err, want)
			default:
				t.Fatalf("nothing reported in 5 s, want %v", want)
			}
		}
	}
	// Each loss is made while the link is up and stays so until Run has
	// subscribed again: a change made before the old subscription has
	// ended may still come through it, and then be followed by
	// LinkResumed as well.
	w.lose()
	next(LinkResumed)
	must(t, netlink.LinkSetDown(link))
	next(LinkDown)
	must(t, netlink.LinkSetUp(link))
	next(LinkUp)
	w.lose()
	next(LinkResumed)
	must(t, netlink.LinkSetDown(link))
	next(LinkDown)
	must(t, netlink.LinkDel(link))
	next(LinkDeleted)
	if err := <-ended; !errors.Is(err, ErrDeleted) {
		t.Errorf("Run returned %v, want ErrDeleted", err)
	}
	select {
	case ev := <-events:
		t.Errorf("Run reported %v too", ev)
	default:
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// lose ends the watcher's subscription, as lost notifications do.
func (w *Watcher) lose() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sub.ended = true
	close(w.sub.done)
}

// testLink makes a veth link (down) in a network namespace of the calling
// goroutine's own: its thread is moved there and stays locked to it, to
// end with the test.
func testLink(t *testing.T) (netlink.Link, netns.NsHandle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a network namespace with a veth pair")
	}
	runtime.LockOSThread()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "twwatch0"}, PeerName: "twwatch1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("twwatch0")
	if err != nil {
		t.Fatal(err)
	}
	return link, ns
}
