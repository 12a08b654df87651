package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Listen opens the control socket at path: mode 0600 (owner only), or
// 0660 for group gid when gid is not negative. A socket left by a tunwall that is
// gone is replaced; one that still answers is an error.
func Listen(path string, gid int) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another tunwall answers on it", path)
	}
	os.Remove(path) // a stale socket from a tunwall that was killed
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		err = os.Chown(path, -1, gid)
		if err == nil {
			// The group must be able to reach the socket in its directory.
			err = os.Chmod(filepath.Dir(path), 0o711)
		}
	}
	if err == nil {
		err = os.Chmod(path, mode)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Serve answers API requests on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	// Requests share ctx, so long answers (captures) end when it does.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Client talks to the API on a unix socket.
type Client struct {
	socket string
	hc     *http.Client // for answers that come at once
	stream *http.Client // for answers that last (captures): no time limit
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{socket: path, hc: &http.Client{Timeout: 30 * time.Second, Transport: tr}, stream: &http.Client{Transport: tr}}
}

// Stream sends a GET whose answer lasts until the server ends it or ctx
// ends; the caller reads and closes the body. An error answer is an
// *APIError.
func (c *Client) Stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tunwall"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.stream.Do(req)
	if err != nil {
		return nil, c.dialError(err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(resp, body)
	}
	return resp, nil
}

// ErrDenied is the error for a control socket this user may not use.
var ErrDenied = errors.New("permission denied")

// dialError explains a request that reached no API.
func (c *Client) dialError(err error) error {
	if errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("control socket %s: %w (it is for root, and the group in control.group if one is set)", c.socket, ErrDenied)
	}
	return fmt.Errorf("%w (%s): %v", ErrNoServer, c.socket, err)
}

// apiError reads the JSON error of an answer.
func apiError(resp *http.Response, body []byte) error {
	var e struct{ Error string }
	if json.Unmarshal(body, &e) != nil || e.Error == "" {
		e.Error = resp.Status
	}
	return &APIError{Status: resp.StatusCode, Msg: e.Error}
}

// APIError is an error answer from the API.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Do sends a request and decodes a JSON answer into out (if not nil).
func (c *Client) Do(method, path string, out any) error {
	req, err := http.NewRequest(method, "http://tunwall"+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return apiError(resp, body)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}
