package tun

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tunwall/tunwall/policy"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Open creates the TUN device described by cfg, assigns its addresses and
// brings it up. On any error nothing is left behind.
func Open(cfg policy.TunConfig) (*Device, error) {
	if _, err := netlink.LinkByName(cfg.Name); err == nil {
		return nil, fmt.Errorf("open tun %s: an interface with that name already exists", cfg.Name)
	}
	wd, err := wgtun.CreateTUN(cfg.Name, cfg.MTU)
	if err != nil {
		return nil, fmt.Errorf("open tun %s: %w", cfg.Name, err)
	}
	d := &Device{Device: wd, name: cfg.Name, mtu: cfg.MTU, addresses: cfg.Addresses}
	if err := configure(d, cfg); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	if wd.BatchSize() > 1 {
		// A batch size above one means the device was opened with a
		// virtio-net header and TSO offloads enabled.
		w, err := newVnetWriter(wd.File())
		if err != nil {
			return nil, errors.Join(err, d.Close())
		}
		d.offload = w
	}
	return d, nil
}

func configure(d *Device, cfg policy.TunConfig) error {
	link, err := netlink.LinkByName(d.name)
	if err != nil {
		return fmt.Errorf("find tun %s: %w", d.name, err)
	}
	d.index = link.Attrs().Index
	if cfg.QueueLength > 0 {
		// The device is open, so the kernel resizes its queue (and may
		// refuse a size it cannot allocate).
		if err := netlink.LinkSetTxQLen(link, cfg.QueueLength); err != nil {
			return fmt.Errorf("set the queue length of %s to %d: %w", d.name, cfg.QueueLength, err)
		}
	}
	if err := addAddresses(link, d.name, cfg.Addresses); err != nil {
		return err
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", d.name, err)
	}
	return nil
}

// addAddresses gives link the addresses; one it has already stays.
func addAddresses(link netlink.Link, name string, addresses []netip.Prefix) error {
	for _, p := range addresses {
		addr := &netlink.Addr{IPNet: ipNet(p)}
		if p.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // usable at once, no duplicate detection wait
		}
		if err := netlink.AddrReplace(link, addr); err != nil {
			return fmt.Errorf("add address %s to %s: %w", p, name, err)
		}
	}
	return nil
}
