//go:build linux && (amd64 || arm64)

package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/scanpay/scanpay/ecr"
)

// The unit's RestrictAddressFamilies= makes socket(2) fail with
// EAFNOSUPPORT for any other family. To learn what scanpay really needs,
// the test binary re-executes itself as a small launcher that installs
// the same restriction as a seccomp filter (taken from the unit's line)
// and then executes scanpay, which runs a whole lane under it.

const (
	sandboxEnv      = "SCANPAY_SANDBOX_EXEC"     // the program to run restricted, or "probe"
	sandboxFamilies = "SCANPAY_SANDBOX_FAMILIES" // e.g. "AF_UNIX AF_INET AF_INET6"
)

var familyNumbers = map[string]uint32{"AF_UNIX": unix.AF_UNIX, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6,
	"AF_NETLINK": unix.AF_NETLINK, "AF_PACKET": unix.AF_PACKET, "AF_BLUETOOTH": unix.AF_BLUETOOTH, "AF_CAN": unix.AF_CAN}

// sandboxLaunch runs in TestMain: in a launcher process it restricts
// socket(2) and executes the program (never returning), or probes the
// restriction and exits.
func sandboxLaunch() {
	prog := os.Getenv(sandboxEnv)
	if prog == "" {
		return
	}
	fail := func(err error) { fmt.Fprintln(os.Stderr, "sandbox:", err); os.Exit(3) }
	runtime.LockOSThread() // the filter is per thread; exec from this one
	if err := restrictFamilies(strings.Fields(os.Getenv(sandboxFamilies))); err != nil {
		fail(err)
	}
	if prog == "probe" {
		_, err := net.Interfaces() // netlink, when it is allowed
		fmt.Println("interfaces:", err)
		os.Exit(0)
	}
	fail(syscall.Exec(prog, append([]string{prog}, os.Args[1:]...), os.Environ()))
}

// restrictFamilies installs a seccomp filter that fails socket(2) with
// EAFNOSUPPORT unless its family is one of names, as systemd does.
func restrictFamilies(names []string) error {
	arch := uint32(unix.AUDIT_ARCH_X86_64)
	if runtime.GOARCH == "arm64" {
		arch = unix.AUDIT_ARCH_AARCH64
	}
	var fams []uint32
	for _, n := range names {
		f, ok := familyNumbers[n]
		if !ok {
			return fmt.Errorf("unknown address family %s", n)
		}
		fams = append(fams, f)
	}
	// Layout: checks, then DENY at d, ALLOW at d+1.
	n := 4 + len(fams)
	d, a := uint8(n+1), uint8(n+2)
	ld := func(off uint32) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: off}
	}
	jeq := func(i uint8, k uint32, yes, no uint8) unix.SockFilter {
		return unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: k, Jt: yes - i - 1, Jf: no - i - 1}
	}
	prog := []unix.SockFilter{
		ld(4), jeq(1, arch, 2, a), // seccomp_data.arch
		ld(0), jeq(3, unix.SYS_SOCKET, 4, a), // .nr
		ld(16), // .args[0], low half (little endian)
	}
	for i, f := range fams {
		at := uint8(5 + i)
		prog = append(prog, jeq(at, f, a, at+1))
	}
	prog = append(prog,
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW})
	if len(prog) != int(a)+1 || int(d) != len(prog)-2 {
		return fmt.Errorf("filter layout %d/%d/%d", len(prog), d, a)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return err
	}
	fp := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fp))); e != 0 {
		return e
	}
	return nil
}

// scanpay runs a whole lane with only the address families its unit
// allows: the gateway by host name, the metrics server, sd_notify, the
// register and the scanner. The unit dropped AF_NETLINK on this proof
// (Go's net package uses netlink only to list interfaces, for IPv6
// zones such as fe80::1%eth0, which scanpay's addresses never need).
func TestHostileSandboxAddressFamilies(t *testing.T) {
	allowed := strings.Fields(unitSettings(t)["RestrictAddressFamilies"])
	if len(allowed) == 0 {
		t.Fatal("the unit has no RestrictAddressFamilies=")
	}
	// The launcher's restriction is real: with the unit's families,
	// netlink fails exactly as under systemd.
	probe := exec.Command(os.Args[0])
	probe.Env = append(os.Environ(), sandboxEnv+"=probe", sandboxFamilies+"="+strings.Join(allowed, " "))
	out, err := probe.CombinedOutput()
	if err != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	netlinkAllowed := strings.Contains(strings.Join(allowed, " "), "AF_NETLINK")
	if refused := strings.Contains(string(out), "address family not supported"); refused == netlinkAllowed {
		t.Fatalf("probe with %v: %s", allowed, out)
	}

	l := newLane(t, "100ms")
	cfg, _ := os.ReadFile(l.config)
	os.WriteFile(l.config, []byte(strings.Replace(string(cfg), "http://127.0.0.1:", "http://localhost:", 1)), 0o644)
	l.launcher = []string{os.Args[0]}
	l.env = []string{sandboxEnv + "=" + binary, sandboxFamilies + "=" + strings.Join(allowed, " ")}
	l.start()
	res := l.sale(1500, "SBX1", "134567890123450042")
	if res.Status != ecr.StatusApproved || len(l.sim.PaidOrders()) != 1 {
		t.Fatalf("sale under the unit's address families: %+v\n%s", res, l.logs.String())
	}
	if !strings.Contains(l.get("/healthz"), `"state"`) {
		t.Fatal("metrics server not answering")
	}
	l.stop()
	if strings.Contains(l.logs.String(), "address family not supported") {
		t.Fatalf("scanpay hit the restriction:\n%s", l.logs.String())
	}
}
