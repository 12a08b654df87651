// Package sdnotify tells a service manager how the process is doing, over
// the datagram socket named by $NOTIFY_SOCKET (systemd's Type=notify
// protocol). tunwall run sends READY=1 once the device, the routing and the
// control socket are all in place, and STOPPING=1 when shutdown begins, so
// that units ordered after tunwall start only when its routes work.
// Without $NOTIFY_SOCKET every call does nothing.
package sdnotify
