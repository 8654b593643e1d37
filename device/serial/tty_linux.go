package serial

import (
	"fmt"
	"os"

	bugst "go.bug.st/serial"
	"golang.org/x/sys/unix"
)

var baudRates = map[int]uint32{
	1200: unix.B1200, 2400: unix.B2400, 4800: unix.B4800, 9600: unix.B9600,
	19200: unix.B19200, 38400: unix.B38400, 57600: unix.B57600, 115200: unix.B115200,
}

// OpenTTY opens a serial port for a peer that must never wedge its owner
// (the display, the ECR link, the scanner): the file is non-blocking and
// registered with Go's poller, so SetReadDeadline/SetWriteDeadline work and
// Close releases a pending read or write. go.bug.st/serial writes block
// without a deadline, and its reads block a thread: a scanner's code then
// waited for the runtime to notice the blocked reader before the lane could
// run (on the daemon's single P), measured in bench-e2e.
// The port is put in raw mode with the given speed, size and parity, and
// taken for exclusive use.
func OpenTTY(c PortConfig) (*os.File, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	fd, err := unix.Open(c.Path, unix.O_RDWR|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open serial port %s: %w", c.Path, err)
	}
	if err := setRaw(fd, c); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("configure serial port %s: %w", c.Path, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TIOCEXCL, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock serial port %s: %w", c.Path, err)
	}
	return os.NewFile(uintptr(fd), c.Path), nil
}

func setRaw(fd int, c PortConfig) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return err
	}
	makeRaw(t, c)
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}

// makeRaw sets t to raw mode with c's speed, character size and parity.
// (A pty ignores size and parity: the kernel forces CS8 on it.)
func makeRaw(t *unix.Termios, c PortConfig) {
	speed := baudRates[c.Baud]
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF | unix.IXANY | unix.INPCK
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB | unix.PARODD | unix.CSTOPB | unix.CRTSCTS | unix.CBAUD
	t.Cflag |= unix.CREAD | unix.CLOCAL | speed
	if c.DataBits == 7 {
		t.Cflag |= unix.CS7
	} else {
		t.Cflag |= unix.CS8
	}
	switch p, _ := parseParity(c.Parity); p {
	case bugst.OddParity:
		t.Cflag |= unix.PARENB | unix.PARODD
		t.Iflag |= unix.INPCK
	case bugst.EvenParity:
		t.Cflag |= unix.PARENB
		t.Iflag |= unix.INPCK
	}
	t.Ispeed, t.Ospeed = speed, speed
	t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
}
