// Package tun opens and configures the TUN device tunwall reads traffic from.
//
// Open creates the device with wireguard's tun package (so reads and writes
// are batched and, on Linux, carry TSO/GSO offloads), gives it the configured
// IPv4 and IPv6 addresses and brings it up. Device.Close removes it again,
// and with it every address and prefix route the kernel attached to it.
//
// Routes into the device and policy-routing rules belong to the routing
// modes; with routing.mode none the operator sends traffic in.
package tun
