package install

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// rig is one architecture's part of the suite, from the environment
// deploy/vm/install/run.sh sets.
type rig struct {
	arch    string
	image   string // image.sh's folder: root.img, vmlinuz, initrd.gz
	payload string // the run's payload disk: packages, simulator, agent
	work    string // scratch for this architecture's boots
	tty     struct{ ecr, display string }
	// cleanup is the whole test's: a machine booted in one scenario runs
	// on into the next ones.
	cleanup func(func())
}

func needRig(t *testing.T, arch string) *rig {
	t.Helper()
	if os.Getenv("SCANPAY_INSTALL_TEST") == "" {
		t.Skip("the install suite boots Debian in QEMU: run it with make test-install")
	}
	up := strings.ToUpper(arch)
	r := &rig{arch: arch, image: os.Getenv("SCANPAY_INSTALL_IMAGE_" + up), payload: os.Getenv("SCANPAY_INSTALL_PAYLOAD_" + up),
		work: filepath.Join(os.Getenv("SCANPAY_INSTALL_WORK"), arch), cleanup: t.Cleanup}
	if r.image == "" || r.payload == "" || os.Getenv("SCANPAY_INSTALL_WORK") == "" {
		t.Skipf("no %s image or payload in the environment (SCANPAY_INSTALL_IMAGE_%s, SCANPAY_INSTALL_PAYLOAD_%s)", arch, up, up)
	}
	// The register's and the display's UARTs: 16550s on the ISA bus of a
	// PC, on PCI (QEMU's pci-serial) on arm64 virt, whose own UART is the
	// console.
	switch arch {
	case "amd64":
		r.tty.ecr, r.tty.display = "/dev/ttyS1", "/dev/ttyS2"
	default:
		r.tty.ecr, r.tty.display = "/dev/ttyS0", "/dev/ttyS1"
	}
	if err := os.MkdirAll(r.work, 0o755); err != nil {
		t.Fatal(err)
	}
	return r
}

// bootOpts says how to boot.
type bootOpts struct {
	name     string    // names this boot's files
	disk     string    // the lane's disk; made from the image when missing
	rtc      time.Time // the RTC at power on; zero is the host's time
	linkDown bool      // boot with the network cable out (no time sync)
}

// machine is a booted guest.
type machine struct {
	rig     *rig
	name    string
	dir     string
	cmd     *exec.Cmd
	exited  chan struct{}
	console string // the serial console's log
	display string // what the display's UART sent
	ecrSock string // host end of the register's UART
	monSock string // QEMU's monitor

	mu     sync.Mutex // one agent request at a time
	agent  net.Conn
	agentR *bufio.Reader
	nextID int
}

// boot starts QEMU and waits until systemd in the guest has finished
// starting up and the agent answers.
func (r *rig) boot(t *testing.T, o bootOpts) *machine {
	t.Helper()
	dir := filepath.Join(r.work, o.name)
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &machine{rig: r, name: r.arch + "/" + o.name, dir: dir, exited: make(chan struct{}),
		console: filepath.Join(dir, "console.log"), display: filepath.Join(dir, "display.bin"),
		ecrSock: filepath.Join(dir, "ecr.sock"), monSock: filepath.Join(dir, "mon.sock")}
	agentSock := filepath.Join(dir, "agent.sock")
	if len(agentSock) > 100 {
		t.Fatalf("socket path %s is too long for a Unix socket: use a shorter SCANPAY_INSTALL_WORK", agentSock)
	}
	if _, err := os.Stat(o.disk); errors.Is(err, os.ErrNotExist) {
		out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-b", filepath.Join(r.image, "root.img"), "-F", "raw", o.disk).CombinedOutput()
		if err != nil {
			t.Fatalf("qemu-img: %v: %s", err, out)
		}
	}
	rtc := "base=utc"
	if !o.rtc.IsZero() {
		rtc = "base=" + o.rtc.UTC().Format("2006-01-02T15:04:05")
	}
	args := []string{"-accel", "tcg", "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(r.image, "vmlinuz"), "-initrd", filepath.Join(r.image, "initrd.gz"),
		"-rtc", rtc,
		"-chardev", "file,id=con,path=" + m.console,
		"-chardev", "socket,id=ecr,path=" + m.ecrSock + ",server=on,wait=off",
		"-chardev", "file,id=disp,path=" + m.display,
		"-drive", "if=none,id=root,file=" + o.disk + ",format=qcow2",
		"-device", "virtio-blk-pci,drive=root",
		"-drive", "if=none,id=payload,file=" + r.payload + ",format=raw,readonly=on",
		"-device", "virtio-blk-pci,drive=payload",
		"-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,id=nic0",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=agent,path=" + agentSock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.scanpay.e2e",
		"-monitor", "unix:" + m.monSock + ",server=on,wait=off",
	}
	if o.linkDown {
		args = append(args, "-S") // paused until the link is set down
	}
	bin := "qemu-system-x86_64"
	switch r.arch {
	case "amd64":
		// A VGA card gives the lane a tty1 with a login prompt, as a Pi
		// with a screen has.
		args = append(args, "-machine", "pc", "-vga", "std", "-serial", "chardev:con", "-serial", "chardev:ecr",
			"-serial", "chardev:disp", "-append", "console=ttyS0 panic=-1")
	case "arm64":
		bin = "qemu-system-aarch64"
		args = append(args, "-machine", "virt", "-cpu", "cortex-a53", "-serial", "chardev:con",
			"-device", "pci-serial,chardev=ecr", "-device", "pci-serial,chardev=disp", "-append", "console=ttyAMA0 panic=-1")
	}
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, args...)
	m.cmd.Stdout, m.cmd.Stderr = qlog, qlog
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	go func() {
		m.cmd.Wait()
		qlog.Close()
		close(m.exited)
	}()
	r.cleanup(m.kill)
	start := time.Now()
	if o.linkDown {
		m.monitor(t, "set_link nic0 off")
		m.monitor(t, "cont")
	}
	if err := m.connectAgent(60 * time.Second); err != nil {
		m.fatal(t, "agent socket: %v", err)
	}
	out, _, err := m.exec(6*time.Minute, "systemctl is-system-running --wait || systemctl --failed --no-legend")
	if err != nil {
		m.fatal(t, "the guest did not come up: %v", err)
	}
	t.Logf("%s: booted in %.0f s: %s", m.name, time.Since(start).Seconds(), strings.Join(strings.Fields(out), " "))
	return m
}

func (m *machine) connectAgent(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		c, err := net.Dial("unix", filepath.Join(m.dir, "agent.sock"))
		if err == nil {
			m.agent, m.agentR = c, bufio.NewReaderSize(c, 1<<20)
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-m.exited:
			return errors.New("QEMU exited")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// monitor sends commands (one a line) to QEMU's human monitor and returns
// its answers.
func (m *machine) monitor(t *testing.T, cmd string) string {
	t.Helper()
	var c net.Conn
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err = net.Dial("unix", m.monSock); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		m.fatal(t, "monitor: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	readPrompt := func() (string, error) {
		var b strings.Builder
		for !strings.HasSuffix(b.String(), "(qemu) ") {
			ch, err := r.ReadByte()
			if err != nil {
				return b.String(), err
			}
			b.WriteByte(ch)
		}
		return b.String(), nil
	}
	if _, err := readPrompt(); err != nil {
		m.fatal(t, "monitor banner: %v", err)
	}
	var all strings.Builder
	for _, line := range strings.Split(cmd, "\n") {
		if _, err := fmt.Fprintf(c, "%s\n", line); err != nil {
			m.fatal(t, "monitor %q: %v", line, err)
		}
		out, err := readPrompt()
		if err != nil {
			m.fatal(t, "monitor %q: %v (%q)", line, err, out)
		}
		all.WriteString(out)
	}
	return all.String()
}

// exec runs a bash script as root in the guest (in /mnt/payload, with
// lib.sh sourced) and returns its output and exit status. err is set when
// the agent did not answer within timeout.
func (m *machine) exec(timeout time.Duration, script string) (string, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.agent == nil {
		return "", -1, errors.New("no agent connection")
	}
	m.nextID++
	id := strconv.Itoa(m.nextID)
	full := ". /mnt/payload/lib.sh\n" + script + "\n"
	m.agent.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(m.agent, "%s %s\n", id, base64.StdEncoding.EncodeToString([]byte(full))); err != nil {
		return "", -1, fmt.Errorf("agent write: %w", err)
	}
	for {
		line, err := m.agentR.ReadString('\n')
		if err != nil {
			return "", -1, fmt.Errorf("agent: no answer in %v: %w", timeout, err)
		}
		f := strings.SplitN(strings.TrimRight(line, "\n"), " ", 3)
		if len(f) < 2 || f[0] != id {
			continue // a late answer to a request that timed out
		}
		rc, _ := strconv.Atoi(f[1])
		var out []byte
		if len(f) == 3 {
			out, _ = base64.StdEncoding.DecodeString(f[2])
		}
		return string(out), rc, nil
	}
}

// sh runs a script that must succeed and returns its output.
func (m *machine) sh(t *testing.T, script string) string {
	t.Helper()
	return m.shWithin(t, 5*time.Minute, script)
}

func (m *machine) shWithin(t *testing.T, timeout time.Duration, script string) string {
	t.Helper()
	out, rc, err := m.exec(timeout, script)
	if err != nil || rc != 0 {
		m.fatal(t, "guest script failed (exit %d, %v):\n%s\n--- output\n%s", rc, err, script, out)
	}
	return out
}

// fatal fails the test after printing what the guest knows.
func (m *machine) fatal(t *testing.T, format string, args ...any) {
	t.Helper()
	t.Errorf(format, args...)
	m.diagnose(t)
	t.FailNow()
}

// diagnose prints the guest's journal and the unit's status, or the
// console when the guest does not answer.
func (m *machine) diagnose(t *testing.T) {
	t.Helper()
	select {
	case <-m.exited:
		t.Logf("%s: QEMU has exited; console tail:\n%s", m.name, tail(m.console, 60))
		return
	default:
	}
	out, _, err := m.exec(60*time.Second, `journalctl -b --no-pager -n 150 -o short-monotonic
echo "--- systemctl status scanpay"
systemctl status scanpay --no-pager -l -n 30 | tail -n 40`)
	if err != nil {
		t.Logf("%s: the agent does not answer (%v); console tail:\n%s", m.name, err, tail(m.console, 60))
		return
	}
	t.Logf("%s: journalctl -b (last 150 lines) and systemctl status scanpay:\n%s", m.name, out)
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.ReplaceAll(string(data), "\r", ""), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// kill pulls the plug.
func (m *machine) kill() {
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Kill()
	<-m.exited
	if m.agent != nil {
		m.agent.Close()
	}
}

// poweroff shuts the guest down cleanly.
func (m *machine) poweroff(t *testing.T) {
	t.Helper()
	m.exec(30*time.Second, "systemctl poweroff --no-block")
	select {
	case <-m.exited:
	case <-time.After(3 * time.Minute):
		m.fatal(t, "the guest did not power off")
	}
	if m.agent != nil {
		m.agent.Close()
	}
}

// displayBytes is everything the lane sent its display this boot.
func (m *machine) displayBytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(m.display)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tap records both directions of a connection.
type tap struct {
	net.Conn
	mu       sync.Mutex
	got, put bytes.Buffer
}

func (c *tap) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.got.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

func (c *tap) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	c.put.Write(b[:n])
	c.mu.Unlock()
	return n, err
}

// bytes returns what the host read and wrote.
func (c *tap) bytes() (got, put []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.got.Bytes()), bytes.Clone(c.put.Bytes())
}

// registerLine connects to the host end of the register's UART.
func (m *machine) registerLine(t *testing.T) *tap {
	t.Helper()
	c, err := net.Dial("unix", m.ecrSock)
	if err != nil {
		m.fatal(t, "register UART: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &tap{Conn: c}
}

// waitFor polls cond until it holds or within passes; what names it.
func (m *machine) waitFor(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != "" {
			last = state
		}
		if time.Now().After(deadline) {
			m.fatal(t, "%s: not within %v; last seen: %s", what, within, last)
		}
		select {
		case <-m.exited:
			m.fatal(t, "%s: QEMU exited", what)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
