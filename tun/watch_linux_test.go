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
// Run does are reported by Run, in order; a deletion ends Run.
func TestWatcherMissesNothing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the test makes a network namespace with a veth pair")
	}
	// This goroutine's thread moves into a namespace of its own, and stays
	// locked to it: the thread ends with the test.
	runtime.LockOSThread()
	ns, err := netns.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "twwatch0"}, PeerName: "twwatch1"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	link, err := netlink.LinkByName("twwatch0")
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Down (as it is made) when the watch starts, then up.
	w, err := watchLink("twwatch0", link.Attrs().Index)
	must(err)
	must(netlink.LinkSetUp(link))
	// Down, up, down again and deleted, all before Run.
	must(netlink.LinkSetDown(link))
	must(netlink.LinkSetUp(link))
	must(netlink.LinkSetDown(link))
	must(netlink.LinkDel(link))

	var got []LinkEvent
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = w.Run(ctx, func(ev LinkEvent) { got = append(got, ev) })
	want := []LinkEvent{LinkDown, LinkUp, LinkDown, LinkUp, LinkDown, LinkDeleted}
	if !errors.Is(err, ErrDeleted) || !slices.Equal(got, want) {
		t.Errorf("Run reported %v and returned %v; want %v and ErrDeleted", got, err, want)
	}
}
