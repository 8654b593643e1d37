package serial

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

func TestMakeRaw(t *testing.T) {
	tests := []struct {
		cfg          PortConfig
		size, parity uint32
		odd, inpck   bool
		speed        uint32
	}{
		{PortConfig{Baud: 9600, DataBits: 8, Parity: "none"}, unix.CS8, 0, false, false, unix.B9600},
		{PortConfig{Baud: 9600, DataBits: 7, Parity: "even"}, unix.CS7, unix.PARENB, false, true, unix.B9600},
		{PortConfig{Baud: 115200, DataBits: 8, Parity: "odd"}, unix.CS8, unix.PARENB, true, true, unix.B115200},
	}
	for _, tc := range tests {
		tio := &unix.Termios{Lflag: unix.ICANON | unix.ECHO, Iflag: unix.ICRNL | unix.IXON, Oflag: unix.OPOST, Cflag: unix.CS8 | unix.PARODD | unix.CRTSCTS | unix.B1200}
		makeRaw(tio, tc.cfg)
		if tio.Cflag&unix.CSIZE != tc.size || tio.Cflag&unix.PARENB != tc.parity || (tio.Cflag&unix.PARODD != 0) != tc.odd ||
			(tio.Iflag&unix.INPCK != 0) != tc.inpck || tio.Cflag&unix.CBAUD != tc.speed || tio.Ispeed != tc.speed {
			t.Errorf("%+v: cflag %#o iflag %#o", tc.cfg, tio.Cflag, tio.Iflag)
		}
		if tio.Cflag&unix.CRTSCTS != 0 || tio.Lflag&(unix.ICANON|unix.ECHO) != 0 || tio.Iflag&(unix.ICRNL|unix.IXON) != 0 || tio.Oflag&unix.OPOST != 0 {
			t.Errorf("%+v: not raw", tc.cfg)
		}
	}
}

func TestOpenTTYDeadlines(t *testing.T) {
	m, s, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	defer s.Close()
	f, err := OpenTTY(PortConfig{Path: s.Name(), Baud: 9600, DataBits: 7, Parity: "even"})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tio, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ICANON|unix.ECHO) != 0 || tio.Oflag&unix.OPOST != 0 || tio.Iflag&unix.ICRNL != 0 {
		t.Fatal("not raw")
	}
	// A peer that never reads: the write must give up at its deadline
	// instead of blocking the owner forever.
	f.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	chunk := make([]byte, 4096)
	var werr error
	for i := 0; i < 1000 && werr == nil; i++ {
		_, werr = f.Write(chunk)
	}
	if !errors.Is(werr, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a stalled peer: %v", werr)
	}
	f.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := f.Read(chunk); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing to read: %v", err)
	}
	if _, err := OpenTTY(PortConfig{Path: "/nonexistent/tty", Baud: 9600, DataBits: 8}); err == nil {
		t.Fatal("opened a missing port")
	}
}
