package tun

import "errors"

// LinkEvent is a change of the device's link that a Watcher reports.
type LinkEvent int

const (
	LinkDown    LinkEvent = iota + 1 // set down: no traffic passes, and the kernel dropped its routes
	LinkUp                           // set up again after LinkDown
	LinkDeleted                      // deleted: the device is gone for good
	LinkResumed                      // up, followed again after notifications were lost: it may have been down meanwhile
)

func (e LinkEvent) String() string {
	switch e {
	case LinkDown:
		return "down"
	case LinkUp:
		return "up"
	case LinkDeleted:
		return "deleted"
	case LinkResumed:
		return "resumed"
	}
	return "unknown"
}

// ErrDeleted is what Watcher.Run returns once the device has been deleted.
var ErrDeleted = errors.New("the device was deleted")
