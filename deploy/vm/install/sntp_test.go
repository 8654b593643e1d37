package install

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clientRequest is an SNTP client packet of the given version with the
// client's transmit time set to stamp (an opaque value to the server).
func clientRequest(version byte, stamp uint64) []byte {
	b := make([]byte, packetLen)
	b[0] = version<<3 | 3
	b[2] = 6
	binary.BigEndian.PutUint64(b[40:48], stamp)
	return b
}

func ntpTime(b []byte) time.Time {
	sec := int64(binary.BigEndian.Uint32(b[0:4])) - ntpEpochOffset
	frac := uint64(binary.BigEndian.Uint32(b[4:8]))
	return time.Unix(sec, int64(frac*1e9>>32))
}

func TestReply(t *testing.T) {
	rx := time.Date(2026, 11, 28, 10, 30, 0, 250_000_000, time.UTC)
	tx := rx.Add(3 * time.Millisecond)
	for _, version := range []byte{3, 4} {
		req := clientRequest(version, 0x0123456789abcdef)
		out, err := Reply(req, rx, tx)
		if err != nil {
			t.Fatalf("v%d: %v", version, err)
		}
		if len(out) != packetLen || out[0] != version<<3|4 || out[1] != 1 || out[2] != 6 {
			t.Fatalf("v%d header % x", version, out[:4])
		}
		if got := binary.BigEndian.Uint64(out[24:32]); got != 0x0123456789abcdef {
			t.Errorf("v%d origin %x, want the client's transmit time", version, got)
		}
		if got := binary.BigEndian.Uint64(out[4:12]); got != 0 {
			t.Errorf("v%d root delay/dispersion %x, want 0", version, got)
		}
		// Fractions are 2^-32 s: the round trip loses under a nanosecond.
		if d := ntpTime(out[32:40]).Sub(rx); d < -time.Nanosecond || d > time.Nanosecond {
			t.Errorf("v%d receive time off by %v", version, d)
		}
		if d := ntpTime(out[40:48]).Sub(tx); d < -time.Nanosecond || d > time.Nanosecond {
			t.Errorf("v%d transmit time off by %v", version, d)
		}
	}
}

func TestReplyRefusesWhatIsNotAClientRequest(t *testing.T) {
	server := clientRequest(4, 1)
	server[0] = 4<<3 | 4
	broadcast := clientRequest(4, 1)
	broadcast[0] = 4<<3 | 5
	for name, req := range map[string][]byte{
		"empty":       nil,
		"short":       clientRequest(4, 1)[:47],
		"server mode": server,
		"broadcast":   broadcast,
		"version 0":   clientRequest(0, 1),
		"version 5":   clientRequest(5, 1),
	} {
		if _, err := Reply(req, time.Now(), time.Now()); !errors.Is(err, ErrNotClient) {
			t.Errorf("%s: err %v, want ErrNotClient", name, err)
		}
	}
}

func FuzzReply(f *testing.F) {
	f.Add(clientRequest(4, 42))
	f.Add(clientRequest(3, 0))
	f.Add(clientRequest(4, 1)[:20])
	f.Add(append(clientRequest(4, 7), 0, 0, 0, 1, 0xde, 0xad))
	f.Fuzz(func(t *testing.T, req []byte) {
		out, err := Reply(req, time.Unix(1_800_000_000, 0), time.Unix(1_800_000_000, 5))
		if err != nil {
			return
		}
		if len(out) != packetLen || out[0]&7 != 4 || string(out[24:32]) != string(req[40:48]) {
			t.Fatalf("reply % x to % x", out, req)
		}
	})
}

// exchange sends req to the responder and returns the first reply.
func exchange(t *testing.T, c *net.UDPConn, reqs ...[]byte) []byte {
	t.Helper()
	for _, r := range reqs {
		if _, err := c.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestSNTPServes(t *testing.T) {
	now := time.Date(2026, 11, 28, 10, 30, 0, 0, time.UTC)
	s, err := ListenSNTP("127.0.0.1:0", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	c, err := net.DialUDP("udp", nil, s.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Garbage first: ignored, and the valid request after it answered.
	out := exchange(t, c, []byte("hello"), clientRequest(4, 1))
	if got := binary.BigEndian.Uint64(out[24:32]); got != 1 {
		t.Fatalf("answered request %d, want 1", got)
	}
	if !ntpTime(out[40:48]).Equal(now) {
		t.Fatalf("transmit time %v, want %v", ntpTime(out[40:48]), now)
	}

	// Two valid requests after it: each answered, in order.
	for _, stamp := range []uint64{2, 3} {
		out = exchange(t, c, clientRequest(3, stamp))
		if got := binary.BigEndian.Uint64(out[24:32]); got != stamp {
			t.Fatalf("answered request %d, want %d", got, stamp)
		}
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	// Counted once Serve has returned: the server counts a reply after
	// sending it, so the client can read the last one first.
	if s.Answered() != 3 {
		t.Fatalf("answered %d, want 3", s.Answered())
	}
}

// Concurrent suites bind NTP's one port together.
func TestRespondersShareThePort(t *testing.T) {
	a, err := ListenSNTP("127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := ListenSNTP(a.Addr().String(), nil)
	if err != nil {
		t.Fatalf("second responder on %s: %v", a.Addr(), err)
	}
	b.Close()
}
