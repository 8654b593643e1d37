package install

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// ntpEpochOffset is the seconds from 1900-01-01 (NTP's era 0) to 1970-01-01.
const ntpEpochOffset = 2208988800

// soReusePort is SO_REUSEPORT on Linux, which package syscall lacks.
const soReusePort = 0xf

// packetLen is an NTP header without extensions or authenticator.
const packetLen = 48

// ErrNotClient is returned for packets that are not NTP client requests.
var ErrNotClient = errors.New("not an NTP client request")

// Reply is an SNTP server's answer (RFC 4330) to req, received at rx and
// sent at tx: stratum 1, no leap warning, zero root delay and dispersion, and
// the client's transmit time echoed as the origin, which systemd-timesyncd
// and chrony check before they trust a reply.
func Reply(req []byte, rx, tx time.Time) ([]byte, error) {
	if len(req) < packetLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrNotClient, len(req))
	}
	version, mode := req[0]>>3&7, req[0]&7
	if mode != 3 || version < 1 || version > 4 {
		return nil, fmt.Errorf("%w: version %d mode %d", ErrNotClient, version, mode)
	}
	out := make([]byte, packetLen)
	out[0] = version<<3 | 4 // leap indicator 0, server mode
	out[1] = 1              // stratum 1: a primary reference
	out[2] = req[2]         // poll interval, echoed
	out[3] = 0xec           // precision 2^-20 s
	copy(out[12:16], "LOCL")
	putTime(out[16:24], rx)
	copy(out[24:32], req[40:48])
	putTime(out[32:40], rx)
	putTime(out[40:48], tx)
	return out, nil
}

func putTime(b []byte, t time.Time) {
	binary.BigEndian.PutUint32(b[0:4], uint32(t.Unix()+ntpEpochOffset))
	binary.BigEndian.PutUint32(b[4:8], uint32((uint64(t.Nanosecond())<<32)/1e9))
}

// SNTP answers NTP client requests on a UDP socket with now(). Guests
// reach it through QEMU's user network (10.0.2.2 is the host's loopback);
// a test that wants a guest without time takes the guest's link down.
type SNTP struct {
	conn     *net.UDPConn
	now      func() time.Time
	answered atomic.Int64
}

// ListenSNTP listens on addr (host:port); now nil means time.Now. The
// socket is bound with SO_REUSEPORT: NTP's port is fixed (123) and guests
// cannot be told another, so every responder of concurrent test runs binds
// it, and any of them may answer any guest: they all give the host's time.
func ListenSNTP(addr string, now func() time.Time) (*SNTP, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return nil, fmt.Errorf("sntp listen %s: %w", addr, err)
	}
	conn := pc.(*net.UDPConn)
	if now == nil {
		now = time.Now
	}
	return &SNTP{conn: conn, now: now}, nil
}

// Addr is the address the responder listens on.
func (s *SNTP) Addr() net.Addr { return s.conn.LocalAddr() }

// Answered counts the requests answered so far.
func (s *SNTP) Answered() int64 { return s.answered.Load() }

// Serve answers until Close; it returns nil after Close.
func (s *SNTP) Serve() error {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("sntp read: %w", err)
		}
		rx := s.now()
		out, err := Reply(buf[:n], rx, s.now())
		if err != nil {
			continue // not for us: a server ignores what it cannot answer
		}
		if _, err := s.conn.WriteToUDP(out, from); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue // the client went away; the next request may do better
		}
		s.answered.Add(1)
	}
}

// Close stops Serve.
func (s *SNTP) Close() error { return s.conn.Close() }
