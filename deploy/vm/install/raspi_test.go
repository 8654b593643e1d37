package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
)

// TestRaspi3bSmoke boots Debian's arm64 kernel on QEMU's Raspberry Pi 3
// (-M raspi3b: its SoC, its USB host, its UART) with a busybox initramfs
// (raspi-init.sh) and scanpay's arm64 binary from the .deb: a sale with the
// amount from the register on a USB serial adapter and the code typed on
// the USB keyboard.
func TestRaspi3bSmoke(t *testing.T) {
	initrd := os.Getenv("SCANPAY_INSTALL_RASPI_INITRD")
	image := os.Getenv("SCANPAY_INSTALL_IMAGE_ARM64")
	if os.Getenv("SCANPAY_INSTALL_TEST") == "" || initrd == "" || image == "" {
		t.Skip("the raspi3b smoke boot runs from make test-install")
	}
	t.Parallel()
	dir := filepath.Join(os.Getenv("SCANPAY_INSTALL_WORK"), "raspi3b")
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := &machine{name: "raspi3b", dir: dir, exited: make(chan struct{}), console: filepath.Join(dir, "console.log"),
		ecrSock: filepath.Join(dir, "ecr.sock"), monSock: filepath.Join(dir, "mon.sock")}
	m.cmd = exec.Command("qemu-system-aarch64", "-machine", "raspi3b", "-accel", "tcg", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(image, "vmlinuz"), "-dtb", filepath.Join(image, "raspi", "bcm2837-rpi-3-b.dtb"),
		"-initrd", initrd, "-append", "console=ttyAMA0 panic=-1 quiet",
		"-chardev", "file,id=con,path="+m.console, "-serial", "chardev:con",
		"-monitor", "unix:"+m.monSock+",server=on,wait=off",
		"-device", "usb-kbd",
		"-chardev", "socket,id=ecr,path="+m.ecrSock+",server=on,wait=off", "-device", "usb-serial,chardev=ecr")
	qlog, err := os.Create(filepath.Join(dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	m.cmd.Stdout, m.cmd.Stderr = qlog, qlog
	start := time.Now()
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		m.cmd.Wait()
		qlog.Close()
		close(m.exited)
	}()
	t.Cleanup(m.kill)
	// QEMU's usb-serial is plugged in only while its host end is connected.
	var line *tap
	for deadline := time.Now().Add(30 * time.Second); line == nil; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(m.ecrSock); err == nil {
			line = m.registerLine(t)
		} else if time.Now().After(deadline) {
			m.fatal(t, "no register socket")
		}
	}
	console := func() string { data, _ := os.ReadFile(m.console); return strings.ReplaceAll(string(data), "\r", "") }
	m.waitFor(t, 6*time.Minute, "the guest's scanpay with its USB keyboard and serial port", func() (bool, string) {
		c := console()
		if strings.Contains(c, "SCANPAY-RASPI: FAIL") {
			m.fatal(t, "%s", tail(m.console, 40))
		}
		return strings.Contains(c, "SCANPAY-RASPI: READY"), ""
	})
	t.Logf("raspi3b: booted and scanpay has its devices after %.0f s", time.Since(start).Seconds())

	reg := &ecrtest.Register{Conn: line, Timeout: 10 * time.Second}
	if err := reg.Send(saleRequest(1500, "PI1")); err != nil {
		m.fatal(t, "register over the USB serial adapter: %v", err)
	}
	// The scanner: QEMU's USB keyboard, typed by the monitor.
	var keys []string
	for _, c := range "134567890123456789" {
		keys = append(keys, "sendkey "+string(c))
	}
	m.monitor(t, strings.Join(append(keys, "sendkey ret"), "\n"))
	res, err := reg.Receive(3*time.Minute, true)
	if err != nil || res.Status != ecr.StatusApproved || res.Amount != 1500 {
		m.fatal(t, "the register's result: %+v %v", res, err)
	}
	m.waitFor(t, 3*time.Minute, "the guest's verdict", func() (bool, string) {
		c := console()
		return strings.Contains(c, "SCANPAY-RASPI: PASS") || strings.Contains(c, "SCANPAY-RASPI: FAIL"), ""
	})
	out := console()
	t.Logf("raspi3b console:\n%s", out[strings.Index(out, "SCANPAY-RASPI: kernel"):])
	if !strings.Contains(out, "SCANPAY-RASPI: PASS") {
		t.Fatalf("raspi3b smoke failed")
	}
	t.Logf("raspi3b: sale approved and journaled, %.0f s after power on", time.Since(start).Seconds())
}
