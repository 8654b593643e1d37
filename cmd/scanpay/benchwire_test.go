package main

import (
	"context"
	bin "encoding/binary"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The benchmark's "create_order on the wire" is the moment the request
// reached the gateway's socket, as the kernel stamps it on receipt, and a
// reply leaves when the kernel stamps it on sending (SO_TIMESTAMPING,
// software stamps), not when the gateway's handler runs or returns. The
// handler runs on this test process's threads, which share the machine's
// two cores with the program measured: a program that keeps working after
// its request left (scanpay commits the code's link while the request
// flies, as it may: a real gateway is across the network) would otherwise
// be charged for the gateway's own wake-up. Both programs are measured the
// same way; the handler's view of the request is printed too. Stamps are
// read as two 64-bit words: on a 32-bit build the sockets are not stamped
// and the handler's clock stands in (the benchmark says so).

// wireKey finds a request's connection in its context.
type wireKey struct{}

// newWireServer is httptest.NewServer whose connections stamp what they
// receive.
func newWireServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = wireListener{srv.Listener}
	srv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, wireKey{}, c)
	}
	srv.Start()
	return srv
}

// wireArrival is when r reached the socket (TCP stamps the segment a read
// ends in; a request here is one segment), and forgets it; zero when the
// kernel gave no stamp.
func wireArrival(r *http.Request) time.Time {
	if c, ok := r.Context().Value(wireKey{}).(*wireConn); ok {
		return c.take()
	}
	return time.Time{}
}

// wireDeparture is when the last bytes written to r's connection left
// (the kernel's send stamp, from the socket's error queue); zero when
// there is none.
func wireDeparture(r *http.Request) time.Time {
	if c, ok := r.Context().Value(wireKey{}).(*wireConn); ok {
		return c.sent()
	}
	return time.Time{}
}

type wireListener struct{ net.Listener }

func (l wireListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok || strconv.IntSize != 64 {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	var serr error
	raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPING,
			unix.SOF_TIMESTAMPING_RX_SOFTWARE|unix.SOF_TIMESTAMPING_TX_SOFTWARE|
				unix.SOF_TIMESTAMPING_SOFTWARE|unix.SOF_TIMESTAMPING_OPT_TSONLY)
	})
	if serr != nil {
		return c, nil
	}
	return &wireConn{TCPConn: tc, raw: raw}, nil
}

// wireConn reads with recvmsg to get the receive stamps.
type wireConn struct {
	*net.TCPConn
	raw   syscall.RawConn
	oob   [256]byte // read by one goroutine at a time (the server's)
	mu    sync.Mutex
	first time.Time // the stamp of the first bytes read since take
	eoob  [256]byte // the error queue's, read by the handler
}

// sent drains the socket's error queue, where the kernel puts a stamp
// for each write as it leaves, and returns the newest.
func (c *wireConn) sent() time.Time {
	var at time.Time
	c.raw.Control(func(fd uintptr) {
		for {
			_, oobn, _, _, err := unix.Recvmsg(int(fd), nil, c.eoob[:], unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if err != nil {
				return
			}
			if t, ok := rxStamp(c.eoob[:oobn]); ok {
				at = t
			}
		}
	})
	return at
}

func (c *wireConn) Read(p []byte) (int, error) {
	var n, oobn int
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), p, c.oob[:], 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err // a deadline (the server's way to end a background read)
	}
	if rerr != nil {
		return 0, rerr
	}
	if n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	if at, ok := rxStamp(c.oob[:oobn]); ok {
		c.mu.Lock()
		if c.first.IsZero() {
			c.first = at
		}
		c.mu.Unlock()
	}
	return n, nil
}

func (c *wireConn) take() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	at := c.first
	c.first = time.Time{}
	return at
}

// rxStamp finds the software stamp (the first of scm_timestamping's three
// timespecs, a receive or a send stamp) in a control message; 64-bit only.
func rxStamp(oob []byte) (time.Time, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return time.Time{}, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SO_TIMESTAMPING && len(m.Data) >= 16 {
			sec := int64(bin.NativeEndian.Uint64(m.Data[0:8]))
			nsec := int64(bin.NativeEndian.Uint64(m.Data[8:16]))
			if sec != 0 || nsec != 0 {
				return time.Unix(sec, nsec), true
			}
		}
	}
	return time.Time{}, false
}
