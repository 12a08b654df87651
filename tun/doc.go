// Package tun opens and configures the TUN device tunwall reads traffic from.
//
// Open creates the device with wireguard's tun package (so reads and writes
// are batched and, on Linux, carry TSO/GSO offloads), gives it the configured
// IPv4 and IPv6 addresses and brings it up. Device.Close removes it again,
// and with it every address and prefix route the kernel attached to it.
//
// Install, Attach and Remove own the routing modes on Linux (route-all,
// split, per-user, LAN gateway): NewPlan turns the routing config into
// rules, routes, a fail-closed backstop and forwarding settings; every
// change is recorded in a state file under /run/tunwall before it is made,
// so Down can undo it after a crash. With routing.mode none and no
// routing.from nothing is installed and the operator sends traffic in.
package tun
