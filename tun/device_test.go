package tun

import (
	"errors"
	"io/fs"
	"os"
	"strings"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// closeOnly is a wireguard device of which only Close is used.
type closeOnly struct {
	wgtun.Device
	err error
}

func (c closeOnly) Close() error { return c.err }

// TestCloseAfterListenerEnded: when the wireguard device's link listener
// has ended (its netlink socket overflowed), its Close finds the listener's
// pipe closed and says so, though the device is closed; that is not a
// failure of Close. Any other error still is.
func TestCloseAfterListenerEnded(t *testing.T) {
	pipeClosed := &fs.PathError{Op: "write", Path: "|1", Err: os.ErrClosed}
	if err := (&Device{Device: closeOnly{err: pipeClosed}, name: "tw9"}).Close(); err != nil {
		t.Errorf("Close with the listener's pipe already closed: %v, want nil", err)
	}
	other := errors.New("bad descriptor")
	err := (&Device{Device: closeOnly{err: other}, name: "tw9"}).Close()
	if !errors.Is(err, other) || !strings.Contains(err.Error(), "close tun tw9") {
		t.Errorf("Close with another error: %v, want it reported for tw9", err)
	}
}
